//! The cgroup v2 manager: one directory in the unified hierarchy.

use std::path::PathBuf;

use super::{
    create_levels, is_within, pid_entries, remove_tree, sorted_union, CgroupManager, Version,
};
use crate::controller::cpu::{self, CpuMax};
use crate::controller::freezer::{self, FreezerState};
use crate::controller::memory::{self, MemoryStats};
use crate::controller::pids::{self, PidsStats};
use crate::controller::{cpuset, Controller, Limits};
use crate::error::{CgroupError, Result};
use crate::fs;
use crate::hierarchy::{parse_controller_list, Hierarchy, V2Mount};

/// A cgroup in the unified hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Manager {
    mount: V2Mount,
    rel: String,
    path: PathBuf,
    /// Controllers [`CgroupManager::create`] enables on the way down.
    enable: Vec<Controller>,
}

impl V2Manager {
    /// Cgroup `rel` in the unified hierarchy; `create` will enable `enable`
    /// (those the root offers) in every ancestor's `cgroup.subtree_control`.
    pub fn new(hierarchy: &Hierarchy, rel: &str, enable: &[Controller]) -> Result<V2Manager> {
        let mount = crate::hierarchy::require(hierarchy.v2.as_ref(), "cgroup2")?;
        let path = mount.dir(rel).ok_or_else(|| CgroupError::Unsupported {
            action: "open",
            path: rel.to_string(),
            missing: format!(
                "visibility through the mount at {}",
                mount.mount_point.display()
            ),
        })?;
        Ok(V2Manager {
            mount: mount.clone(),
            rel: rel.to_string(),
            path,
            enable: enable
                .iter()
                .copied()
                .filter(|&c| hierarchy.v2_has(c))
                .collect(),
        })
    }

    /// The cgroup's path in the hierarchy.
    pub fn rel(&self) -> &str {
        &self.rel
    }

    /// The directory on disk.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl CgroupManager for V2Manager {
    fn version(&self) -> Version {
        Version::V2
    }

    fn describe(&self) -> String {
        format!("cgroup v2 {}", self.rel)
    }

    fn dirs(&self) -> Vec<PathBuf> {
        vec![self.path.clone()]
    }

    fn is_root(&self) -> bool {
        self.path == self.mount.mount_point
    }

    fn supports(&self, controller: Controller) -> bool {
        match controller {
            Controller::Pids => pids::present(&self.path),
            Controller::Memory => memory::present_v2(&self.path),
            Controller::Cpu => cpu::present_v2(&self.path),
            Controller::Cpuset => self.path.join("cpuset.cpus").exists(),
            Controller::Freezer => freezer::has_v2(&self.path),
            Controller::Cpuacct | Controller::Io | Controller::Blkio => false,
        }
    }

    fn create(&self) -> Result<()> {
        // Controllers must be enabled in every ancestor's subtree_control
        // before a child can use them. The leaf itself enables none, or the
        // "no internal processes" rule would bar tasks from joining it.
        create_levels(&self.mount.mount_point, &self.path, |parent, _level| {
            enable_in(parent, &self.enable)
        })
    }

    fn remove(&self) -> Result<()> {
        remove_tree(&self.path)
    }

    fn procs(&self) -> Result<Vec<i32>> {
        fs::read_id_list(&self.path.join("cgroup.procs")).map(sorted_union)
    }

    fn procs_recursive(&self) -> Result<Vec<i32>> {
        let mut ids = Vec::new();
        for dir in fs::subtree(&self.path)? {
            ids.extend(fs::read_id_list(&dir.join("cgroup.procs"))?);
        }
        Ok(sorted_union(ids))
    }

    fn threads(&self) -> Result<Vec<i32>> {
        fs::read_id_list(&self.path.join("cgroup.threads")).map(sorted_union)
    }

    fn procs_files(&self) -> Vec<PathBuf> {
        vec![self.path.join("cgroup.procs")]
    }

    fn add_pid(&self, pid: i32) -> Result<()> {
        fs::write(&self.path.join("cgroup.procs"), &pid.to_string())
    }

    fn can_freeze(&self) -> bool {
        freezer::has_v2(&self.path)
    }

    fn set_frozen(&self, frozen: bool) -> Result<()> {
        freezer::write_v2(&self.path, frozen)
    }

    fn freezer_state(&self) -> Result<FreezerState> {
        freezer::read_v2(&self.path)
    }

    fn can_kill(&self) -> bool {
        self.path.join("cgroup.kill").exists()
    }

    fn kill(&self) -> Result<()> {
        fs::write(&self.path.join("cgroup.kill"), "1")
    }

    fn memory(&self) -> Result<Option<MemoryStats>> {
        if memory::present_v2(&self.path) {
            memory::read_v2(&self.path).map(Some)
        } else {
            Ok(None)
        }
    }

    fn pids(&self) -> Result<Option<PidsStats>> {
        if pids::present(&self.path) {
            pids::read(&self.path).map(Some)
        } else {
            Ok(None)
        }
    }

    fn cpu_max(&self) -> Result<Option<CpuMax>> {
        if cpu::present_v2(&self.path) {
            cpu::read_v2(&self.path).map(Some)
        } else {
            Ok(None)
        }
    }

    fn apply(&self, limits: &Limits) -> Result<()> {
        if let Some(max) = limits.pids_max.filter(|_| self.supports(Controller::Pids)) {
            pids::apply(&self.path, max)?;
        }
        if let Some(max) = limits
            .memory_max_bytes
            .filter(|_| self.supports(Controller::Memory))
        {
            memory::apply_v2(&self.path, max, limits.memory_swap_off)?;
        }
        if let Some(max) = limits.cpu_max.filter(|_| self.supports(Controller::Cpu)) {
            cpu::apply_v2(&self.path, &max)?;
        }
        if let Some(cpus) = limits
            .cpuset_cpus
            .as_ref()
            .filter(|_| self.supports(Controller::Cpuset))
        {
            cpuset::apply(&self.path, cpus)?;
        }
        Ok(())
    }

    fn contains_in_subtree(&self, pid: i32) -> Result<bool> {
        Ok(pid_entries(pid)?
            .iter()
            .any(|e| e.is_v2() && is_within(&e.path, &self.rel)))
    }
}

/// Enables `wanted` controllers in `dir`'s `cgroup.subtree_control`, those
/// that `dir` offers and has not enabled yet.
fn enable_in(dir: &std::path::Path, wanted: &[Controller]) -> Result<()> {
    if wanted.is_empty() {
        return Ok(());
    }
    let offered = parse_controller_list(&fs::read(&dir.join("cgroup.controllers"))?);
    let control = dir.join("cgroup.subtree_control");
    let enabled = parse_controller_list(&fs::read(&control)?);
    let missing: Vec<String> = wanted
        .iter()
        .filter(|c| c.is_in(&offered) && !c.is_in(&enabled))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    fs::write(&control, &missing.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_enables_offered_controllers_in_each_parent() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::write(root.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        std::fs::write(root.join("cgroup.subtree_control"), "memory\n").unwrap();
        let h = Hierarchy::from_mountinfo(&format!(
            "41 31 0:38 / {} rw - cgroup2 cgroup2 rw\n",
            root.display()
        ))
        .unwrap()
        .with_v2_controllers(&["cpu", "memory", "pids"]);
        let m = V2Manager::new(
            &h,
            "/sb/leaf",
            &[Controller::Pids, Controller::Memory, Controller::Cpuset],
        )
        .unwrap();
        // The fake's intermediate level needs the files a kernel would add.
        std::fs::create_dir(root.join("sb")).unwrap();
        std::fs::write(root.join("sb/cgroup.controllers"), "memory pids\n").unwrap();
        std::fs::write(root.join("sb/cgroup.subtree_control"), "\n").unwrap();
        m.create().unwrap();
        // cpuset is not offered: never requested. memory was already on at the root.
        assert_eq!(
            std::fs::read_to_string(root.join("cgroup.subtree_control")).unwrap(),
            "+pids"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("sb/cgroup.subtree_control")).unwrap(),
            "+pids +memory"
        );
        assert!(root.join("sb/leaf").is_dir());
        assert_eq!(m.describe(), "cgroup v2 /sb/leaf");
        assert!(!m.is_root() && !m.can_kill() && !m.can_freeze());
        assert!(m.procs().unwrap().is_empty());
    }
}
