//! The cgroup v1 manager: one directory per hierarchy mount the cgroup spans.

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
use crate::hierarchy::{Hierarchy, V1Mount};

/// One cgroup directory in one v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Dir {
    /// The hierarchy.
    pub mount: V1Mount,
    /// The cgroup's path in that hierarchy (`/selfheal-sandbox/x-1-0`).
    pub rel: String,
    /// The directory on disk.
    pub path: PathBuf,
}

impl V1Dir {
    /// Cgroup `rel` under `mount`; `None` when the mount does not show it.
    pub fn new(mount: &V1Mount, rel: &str) -> Option<V1Dir> {
        Some(V1Dir {
            mount: mount.clone(),
            rel: rel.to_string(),
            path: mount.dir(rel)?,
        })
    }

    fn has(&self, controller: Controller) -> bool {
        controller.is_in(&self.mount.controllers)
    }
}

/// A cgroup across one or more v1 hierarchies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Manager {
    dirs: Vec<V1Dir>,
}

impl V1Manager {
    /// Cgroup `rel` in every v1 hierarchy carrying one of `controllers`
    /// (co-mounted controllers share one directory). Fails when a
    /// controller has no v1 hierarchy.
    pub fn new(hierarchy: &Hierarchy, rel: &str, controllers: &[Controller]) -> Result<V1Manager> {
        let mut dirs: Vec<V1Dir> = Vec::new();
        for &c in controllers {
            let mount =
                crate::hierarchy::require(hierarchy.v1_mount(c), &format!("v1 controller {c}"))?;
            if dirs.iter().any(|d| d.mount == *mount) {
                continue;
            }
            let path = mount.dir(rel).ok_or_else(|| CgroupError::Unsupported {
                action: "open",
                path: rel.to_string(),
                missing: format!(
                    "visibility through the mount at {}",
                    mount.mount_point.display()
                ),
            })?;
            dirs.push(V1Dir {
                mount: mount.clone(),
                rel: rel.to_string(),
                path,
            });
        }
        Ok(V1Manager { dirs })
    }

    /// A manager over directories chosen by the caller (e.g. from `/proc/PID/cgroup`).
    pub fn from_dirs(dirs: Vec<V1Dir>) -> V1Manager {
        V1Manager { dirs }
    }

    /// The spanned directories.
    pub fn v1_dirs(&self) -> &[V1Dir] {
        &self.dirs
    }

    fn dir_with(&self, controller: Controller) -> Option<&V1Dir> {
        self.dirs.iter().find(|d| d.has(controller))
    }

    fn collect(&self, file: &str, recursive: bool) -> Result<Vec<i32>> {
        let mut ids = Vec::new();
        for d in &self.dirs {
            let dirs = if recursive {
                fs::subtree(&d.path)?
            } else {
                vec![d.path.clone()]
            };
            for dir in dirs {
                ids.extend(fs::read_id_list(&dir.join(file))?);
            }
        }
        Ok(sorted_union(ids))
    }
}

impl CgroupManager for V1Manager {
    fn version(&self) -> Version {
        Version::V1
    }

    fn describe(&self) -> String {
        let parts: Vec<String> = self
            .dirs
            .iter()
            .map(|d| format!("{}:{}", d.mount.label(), d.rel))
            .collect();
        format!("cgroup v1 [{}]", parts.join(" "))
    }

    fn dirs(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.path.clone()).collect()
    }

    fn is_root(&self) -> bool {
        self.dirs.iter().any(|d| d.path == d.mount.mount_point)
    }

    fn supports(&self, controller: Controller) -> bool {
        let Some(d) = self.dir_with(controller) else {
            return false;
        };
        match controller {
            Controller::Pids => pids::present(&d.path),
            Controller::Memory => memory::present_v1(&d.path),
            Controller::Cpu => cpu::present_v1(&d.path),
            Controller::Cpuset => d.path.join("cpuset.cpus").exists(),
            Controller::Freezer => freezer::has_v1(&d.path),
            Controller::Cpuacct | Controller::Io | Controller::Blkio => false,
        }
    }

    fn create(&self) -> Result<()> {
        for d in &self.dirs {
            let cpuset = d.has(Controller::Cpuset);
            create_levels(&d.mount.mount_point, &d.path, |parent, level| {
                if cpuset {
                    // An empty v1 cpuset refuses tasks; inherit the parent's.
                    cpuset::init_v1_from_parent(parent, level)?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    fn remove(&self) -> Result<()> {
        for d in &self.dirs {
            remove_tree(&d.path)?;
        }
        Ok(())
    }

    fn procs(&self) -> Result<Vec<i32>> {
        self.collect("cgroup.procs", false)
    }

    fn procs_recursive(&self) -> Result<Vec<i32>> {
        self.collect("cgroup.procs", true)
    }

    fn threads(&self) -> Result<Vec<i32>> {
        self.collect("tasks", false)
    }

    fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|d| d.path.join("cgroup.procs"))
            .collect()
    }

    fn add_pid(&self, pid: i32) -> Result<()> {
        for d in &self.dirs {
            fs::write(&d.path.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn can_freeze(&self) -> bool {
        self.supports(Controller::Freezer)
    }

    fn set_frozen(&self, frozen: bool) -> Result<()> {
        let d = self.freezer_dir()?;
        freezer::write_v1(&d.path, frozen)
    }

    fn freezer_state(&self) -> Result<FreezerState> {
        freezer::read_v1(&self.freezer_dir()?.path)
    }

    fn can_kill(&self) -> bool {
        false
    }

    fn kill(&self) -> Result<()> {
        Err(CgroupError::Unsupported {
            action: "kill",
            path: self.describe(),
            missing: "cgroup.kill (cgroup v1 has none; use Cgroup::kill_all)".into(),
        })
    }

    fn memory(&self) -> Result<Option<MemoryStats>> {
        match self.dir_with(Controller::Memory) {
            Some(d) if memory::present_v1(&d.path) => memory::read_v1(&d.path).map(Some),
            _ => Ok(None),
        }
    }

    fn pids(&self) -> Result<Option<PidsStats>> {
        match self.dir_with(Controller::Pids) {
            Some(d) if pids::present(&d.path) => pids::read(&d.path).map(Some),
            _ => Ok(None),
        }
    }

    fn cpu_max(&self) -> Result<Option<CpuMax>> {
        match self.dir_with(Controller::Cpu) {
            Some(d) if cpu::present_v1(&d.path) => cpu::read_v1(&d.path).map(Some),
            _ => Ok(None),
        }
    }

    fn apply(&self, limits: &Limits) -> Result<()> {
        if let (Some(max), Some(d)) = (limits.pids_max, self.dir_with(Controller::Pids)) {
            pids::apply(&d.path, max)?;
        }
        if let (Some(max), Some(d)) = (limits.memory_max_bytes, self.dir_with(Controller::Memory)) {
            memory::apply_v1(&d.path, max, limits.memory_swap_off)?;
        }
        if let (Some(max), Some(d)) = (limits.cpu_max, self.dir_with(Controller::Cpu)) {
            cpu::apply_v1(&d.path, &max)?;
        }
        if let (Some(rt), Some(d)) = (limits.rt_runtime_us, self.dir_with(Controller::Cpu)) {
            let parent = d.path.parent().unwrap_or(&d.mount.mount_point);
            if parent == d.mount.mount_point {
                // The root's budget is the system's; never raise it.
                return Err(CgroupError::Refused {
                    action: "set a real-time budget for",
                    path: d.rel.clone(),
                    reason: "it sits directly under the root; nest it in a parent cgroup".into(),
                });
            }
            cpu::apply_v1_rt(parent, &d.path, rt)?;
        }
        if let (Some(cpus), Some(d)) = (&limits.cpuset_cpus, self.dir_with(Controller::Cpuset)) {
            cpuset::apply(&d.path, cpus)?;
        }
        Ok(())
    }

    fn contains_in_subtree(&self, pid: i32) -> Result<bool> {
        let entries = pid_entries(pid)?;
        for d in &self.dirs {
            let mut controllers = d.mount.controllers.clone();
            controllers.sort();
            let hit = entries.iter().any(|e| {
                let mut ec = e.controllers.clone();
                ec.sort();
                let same_hierarchy = match (&d.mount.name, &e.name) {
                    (Some(a), Some(b)) if controllers.is_empty() => a == b,
                    _ => !ec.is_empty() && ec == controllers,
                };
                same_hierarchy && is_within(&e.path, &d.rel)
            });
            if hit {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl V1Manager {
    fn freezer_dir(&self) -> Result<&V1Dir> {
        self.dir_with(Controller::Freezer)
            .filter(|d| freezer::has_v1(&d.path))
            .ok_or_else(|| CgroupError::Unsupported {
                action: "freeze",
                path: self.describe(),
                missing: "a v1 freezer directory (mount the freezer controller, or use cgroup v2)"
                    .into(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fake_hierarchy(root: &Path) -> Hierarchy {
        let mut text = String::new();
        for (i, c) in ["pids", "memory", "cpu,cpuacct", "freezer"]
            .iter()
            .enumerate()
        {
            let dir = root.join(c);
            std::fs::create_dir_all(&dir).unwrap();
            text += &format!(
                "{} 1 0:{i} / {} rw - cgroup cgroup rw,{c}\n",
                30 + i,
                dir.display()
            );
        }
        Hierarchy::from_mountinfo(&text).unwrap()
    }

    #[test]
    fn spans_one_dir_per_hierarchy_and_applies_limits() {
        let d = tempfile::tempdir().unwrap();
        let h = fake_hierarchy(d.path());
        let m = V1Manager::new(
            &h,
            "/sb/a",
            &[
                Controller::Pids,
                Controller::Memory,
                Controller::Cpu,
                Controller::Cpuacct,
                Controller::Freezer,
            ],
        )
        .unwrap();
        assert_eq!(m.dirs().len(), 4);
        assert!(!m.is_root());
        m.create().unwrap();
        assert!(d.path().join("cpu,cpuacct/sb/a").is_dir());
        // Fake kernel files, as the real kernel would create them.
        let pd = d.path().join("pids/sb/a");
        std::fs::write(pd.join("pids.max"), "max\n").unwrap();
        std::fs::write(pd.join("pids.current"), "0\n").unwrap();
        std::fs::write(pd.join("cgroup.procs"), "7\n3\n").unwrap();
        std::fs::write(d.path().join("memory/sb/a/cgroup.procs"), "3\n").unwrap();
        assert!(m.supports(Controller::Pids) && !m.supports(Controller::Memory));
        m.apply(&Limits {
            pids_max: Some(20),
            ..Limits::default()
        })
        .unwrap();
        assert_eq!(m.pids().unwrap().unwrap().max, Some(20));
        assert_eq!(m.procs().unwrap(), vec![3, 7]);
        assert_eq!(m.memory().unwrap(), None);
        assert!(m.set_frozen(true).is_err(), "no freezer.state in the fake");
        assert!(m.describe().contains("cpu,cpuacct:/sb/a"));
        for f in ["pids", "memory", "cpu,cpuacct", "freezer"] {
            for name in ["cgroup.procs", "pids.max", "pids.current"] {
                let _ = std::fs::remove_file(d.path().join(f).join("sb/a").join(name));
            }
        }
        m.remove().unwrap();
        assert!(!d.path().join("pids/sb/a").exists());
        assert!(d.path().join("pids/sb").exists());
    }

    #[test]
    fn missing_controller_is_an_error_that_names_it() {
        let d = tempfile::tempdir().unwrap();
        let h = fake_hierarchy(d.path());
        let err = V1Manager::new(&h, "/x", &[Controller::Cpuset]).unwrap_err();
        assert!(err.to_string().contains("cpuset"), "{err}");
        let root = V1Manager::new(&h, "/", &[Controller::Pids]).unwrap();
        assert!(root.is_root());
    }
}
