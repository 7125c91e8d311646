//! One manager trait over cgroup v1 and v2 (as youki does): the file-level
//! operations a cgroup offers, without policy. [`crate::Cgroup`] adds the
//! policy (settling, fork-proof killing, safety checks) on top of one or two
//! managers, and tests drive that policy with a fake manager.

mod v1;
mod v2;

use std::fmt;
use std::path::{Path, PathBuf};

use selfheal_sys::SysError;

pub use v1::{V1Dir, V1Manager};
pub use v2::V2Manager;

use crate::controller::cpu::CpuMax;
use crate::controller::freezer::FreezerState;
use crate::controller::memory::MemoryStats;
use crate::controller::pids::PidsStats;
use crate::controller::{Controller, Limits};
use crate::error::{CgroupError, Result};
use crate::proc_cgroup::read_pid_cgroup;

/// The cgroup version a manager drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Legacy per-controller hierarchies.
    V1,
    /// The unified hierarchy.
    V2,
}

/// File-level operations on one cgroup in one cgroup version.
///
/// Process lists are sorted and free of duplicates. A cgroup that vanished
/// meanwhile lists no processes rather than failing.
pub trait CgroupManager: fmt::Debug + Send + Sync {
    /// v1 or v2.
    fn version(&self) -> Version;

    /// Human-readable identity for messages: version, path, controllers.
    fn describe(&self) -> String;

    /// The cgroup directories this manager spans.
    fn dirs(&self) -> Vec<PathBuf>;

    /// True when any spanned cgroup is the root of its hierarchy.
    fn is_root(&self) -> bool;

    /// True when the controller's files (`pids`, `memory`, `cpu`, `cpuset`,
    /// `freezer`) exist in this cgroup.
    fn supports(&self, controller: Controller) -> bool;

    /// Creates the directories (and whatever makes them usable, such as
    /// enabling v2 controllers in the parents or filling v1 cpusets).
    fn create(&self) -> Result<()>;

    /// Removes the directories, descendants first. Already-absent ones are fine.
    fn remove(&self) -> Result<()>;

    /// Processes directly in the cgroup (`cgroup.procs`).
    fn procs(&self) -> Result<Vec<i32>>;

    /// Processes in the cgroup and all its descendants.
    fn procs_recursive(&self) -> Result<Vec<i32>>;

    /// Threads directly in the cgroup (v1 `tasks`, v2 `cgroup.threads`).
    fn threads(&self) -> Result<Vec<i32>>;

    /// The `cgroup.procs` files a new process writes to join.
    fn procs_files(&self) -> Vec<PathBuf>;

    /// Moves process `pid` (all its threads) into the cgroup.
    fn add_pid(&self, pid: i32) -> Result<()>;

    /// True when this cgroup has a freezer.
    fn can_freeze(&self) -> bool;

    /// Requests freezing (`true`) or thawing (`false`); returns at once.
    fn set_frozen(&self, frozen: bool) -> Result<()>;

    /// The freezer's current state.
    fn freezer_state(&self) -> Result<FreezerState>;

    /// True when the cgroup offers `cgroup.kill` (v2, Linux 5.14+).
    fn can_kill(&self) -> bool;

    /// SIGKILLs every process in the cgroup and below, atomically against forks.
    fn kill(&self) -> Result<()>;

    /// Memory counters, if this cgroup has the memory controller.
    fn memory(&self) -> Result<Option<MemoryStats>>;

    /// Task counters, if this cgroup has the pids controller.
    fn pids(&self) -> Result<Option<PidsStats>>;

    /// CFS bandwidth limit, if this cgroup has the cpu controller.
    fn cpu_max(&self) -> Result<Option<CpuMax>>;

    /// Applies the limits whose controller this manager [`supports`](Self::supports); ignores the rest.
    fn apply(&self, limits: &Limits) -> Result<()>;

    /// True when `pid` is in this cgroup or one below it. A vanished pid is not.
    fn contains_in_subtree(&self, pid: i32) -> Result<bool>;

    /// Sends `sig` to `pid` if it is (still) a member; `Ok(false)` when it
    /// is gone or has left. The pid is pinned with a pidfd before the
    /// membership check, so a recycled pid can never make us signal a
    /// stranger. Overridden by test fakes.
    fn signal(&self, pid: i32, sig: i32) -> Result<bool> {
        let to_error = |source: SysError| CgroupError::Signal {
            path: self.describe(),
            pid,
            source,
        };
        let pidfd = match selfheal_sys::signal::pidfd_open(pid) {
            Ok(fd) => Some(fd),
            Err(e) if e.is_gone() => return Ok(false),
            // Kernels before 5.3: no pidfds; fall back to kill(2) below.
            Err(e) if e.errno.is_unsupported() => None,
            Err(e) => return Err(to_error(e)),
        };
        if !self.contains_in_subtree(pid)? {
            return Ok(false);
        }
        let sent = match &pidfd {
            Some(fd) => selfheal_sys::signal::pidfd_send_signal(fd, sig),
            None => selfheal_sys::signal::kill_process(pid, sig),
        };
        match sent {
            Ok(()) => Ok(true),
            Err(e) if e.is_gone() => Ok(false),
            Err(e) => Err(to_error(e)),
        }
    }
}

/// True when cgroup path `path` equals `ancestor` or lies below it.
pub(crate) fn is_within(path: &str, ancestor: &str) -> bool {
    let ancestor = ancestor.trim_end_matches('/');
    ancestor.is_empty()
        || path == ancestor
        || path
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Reads `/proc/PID/cgroup` for a containment check; a vanished pid has none.
pub(crate) fn pid_entries(pid: i32) -> Result<Vec<crate::ProcCgroupEntry>> {
    match read_pid_cgroup(pid) {
        Ok(e) => Ok(e),
        Err(e) if e.is_gone() => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Sorted, deduplicated union.
pub(crate) fn sorted_union(mut ids: Vec<i32>) -> Vec<i32> {
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Creates `path` and any missing parents below `mount_point`, calling
/// `each` for every level from the first below the mount down to `path`.
pub(crate) fn create_levels(
    mount_point: &Path,
    path: &Path,
    mut each: impl FnMut(&Path, &Path) -> Result<()>,
) -> Result<()> {
    let rel = path
        .strip_prefix(mount_point)
        .map_err(|_| CgroupError::Unsupported {
            action: "create",
            path: path.display().to_string(),
            missing: format!("a path below the mount point {}", mount_point.display()),
        })?;
    let mut parent = mount_point.to_path_buf();
    for component in rel.components() {
        let level = parent.join(component);
        match std::fs::create_dir(&level) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(CgroupError::io("mkdir", &level, e)),
        }
        each(&parent, &level)?;
        parent = level;
    }
    Ok(())
}

/// Removes `dir` and its descendants (rmdir, deepest first).
pub(crate) fn remove_tree(dir: &Path) -> Result<()> {
    let all = crate::fs::subtree(dir)?;
    for d in all.iter().rev() {
        match std::fs::remove_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CgroupError::io("rmdir", d, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within() {
        assert!(is_within("/a/b", "/a"));
        assert!(is_within("/a", "/a"));
        assert!(is_within("/a/b", "/"));
        assert!(!is_within("/ab", "/a"));
        assert!(!is_within("/", "/a"));
    }

    #[test]
    fn creates_levels_and_removes_trees() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("x/y");
        let mut seen = Vec::new();
        create_levels(d.path(), &target, |_, level| {
            seen.push(level.to_path_buf());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![d.path().join("x"), target.clone()]);
        std::fs::create_dir(target.join("z")).unwrap();
        remove_tree(&d.path().join("x")).unwrap();
        assert!(!d.path().join("x").exists());
        remove_tree(&d.path().join("x")).unwrap();
        assert!(create_levels(d.path(), Path::new("/elsewhere"), |_, _| Ok(())).is_err());
    }
}
