//! Which cgroup controllers live where: v1, v2 (unified) or hybrid.
//!
//! Detected from mountinfo so it works whatever the distribution chose:
//! - **v1**: one `cgroup` mount per controller set (`/sys/fs/cgroup/memory`,
//!   `/sys/fs/cgroup/cpu,cpuacct`, …), plus named hierarchies (`name=systemd`).
//! - **v2**: one `cgroup2` mount (`/sys/fs/cgroup`) whose root
//!   `cgroup.controllers` lists the controllers it offers.
//! - **hybrid**: v1 controller mounts plus a `cgroup2` mount (usually
//!   `/sys/fs/cgroup/unified`) that holds few or no controllers but still gives
//!   every cgroup `cgroup.freeze` and `cgroup.kill`.

use std::path::{Path, PathBuf};

use crate::controller::Controller;
use crate::error::{CgroupError, Result};
use crate::fs;
use crate::mountinfo::{parse_mountinfo, MountInfo};
use crate::proc_cgroup::ProcCgroupEntry;

/// Superblock options of a v1 cgroup mount that are not controller names.
const V1_NON_CONTROLLER_OPTIONS: &[&str] = &[
    "rw",
    "ro",
    "xattr",
    "noprefix",
    "clone_children",
    "cpuset_v2_mode",
    "favordynmods",
    "nofavordynmods",
    "none",
    "all",
];

/// A cgroup v1 hierarchy mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Mount {
    /// Where it is mounted (`/sys/fs/cgroup/memory`).
    pub mount_point: PathBuf,
    /// The cgroup the mount shows as its root (`/` normally).
    pub root: String,
    /// Controllers attached (`["cpu", "cpuacct"]`); empty for a named hierarchy.
    pub controllers: Vec<String>,
    /// The `name=` of a named hierarchy (`systemd`).
    pub name: Option<String>,
    /// Mounted read-only (we cannot create cgroups there).
    pub read_only: bool,
}

/// The cgroup v2 (unified) mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Mount {
    /// Where it is mounted (`/sys/fs/cgroup` or `/sys/fs/cgroup/unified`).
    pub mount_point: PathBuf,
    /// The cgroup the mount shows as its root (`/` normally).
    pub root: String,
    /// Controllers available at the root (`cgroup.controllers`); empty until
    /// [`Hierarchy::read_v2_controllers`] ran, and empty in most hybrids.
    pub controllers: Vec<String>,
    /// Mounted read-only.
    pub read_only: bool,
}

/// The layout of the machine's cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only v1 controller hierarchies.
    V1,
    /// Only the unified hierarchy.
    V2,
    /// v1 controllers plus a cgroup2 mount.
    Hybrid,
}

/// Every cgroup hierarchy visible to the process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hierarchy {
    /// v1 hierarchies, in mountinfo order, one per controller set.
    pub v1: Vec<V1Mount>,
    /// The unified hierarchy, if mounted.
    pub v2: Option<V2Mount>,
}

impl Hierarchy {
    /// Detects this process's hierarchies from `/proc/self/mountinfo` and
    /// reads the controllers of the cgroup2 root.
    pub fn detect() -> Result<Hierarchy> {
        Hierarchy::detect_at(Path::new("/proc/self/mountinfo"))
    }

    /// Like [`Hierarchy::detect`] with another mountinfo file.
    pub fn detect_at(mountinfo: &Path) -> Result<Hierarchy> {
        let mut h = Hierarchy::from_mountinfo(&fs::read(mountinfo)?)?;
        h.read_v2_controllers()?;
        Ok(h)
    }

    /// Parses mountinfo text (no I/O; v2 controllers stay empty).
    pub fn from_mountinfo(text: &str) -> Result<Hierarchy> {
        Ok(Hierarchy::from_mounts(&parse_mountinfo(text)?))
    }

    /// Picks the cgroup mounts out of parsed mountinfo. When a hierarchy is
    /// mounted twice, the first mount wins.
    pub fn from_mounts(mounts: &[MountInfo]) -> Hierarchy {
        let mut h = Hierarchy::default();
        for m in mounts {
            match m.fs_type.as_str() {
                "cgroup2" if h.v2.is_none() => {
                    h.v2 = Some(V2Mount {
                        mount_point: m.mount_point.clone(),
                        root: m.root.clone(),
                        controllers: Vec::new(),
                        read_only: m.is_read_only(),
                    });
                }
                "cgroup" => {
                    let mut controllers: Vec<String> = m
                        .super_options
                        .iter()
                        .filter(|o| {
                            !o.contains('=') && !V1_NON_CONTROLLER_OPTIONS.contains(&o.as_str())
                        })
                        .cloned()
                        .collect();
                    controllers.sort();
                    let name = m
                        .super_options
                        .iter()
                        .find_map(|o| o.strip_prefix("name=").map(str::to_string));
                    let duplicate =
                        h.v1.iter()
                            .any(|v| v.controllers == controllers && v.name == name);
                    if !duplicate {
                        h.v1.push(V1Mount {
                            mount_point: m.mount_point.clone(),
                            root: m.root.clone(),
                            controllers,
                            name,
                            read_only: m.is_read_only(),
                        });
                    }
                }
                _ => {}
            }
        }
        h
    }

    /// Reads `cgroup.controllers` at the cgroup2 mount (no-op without one).
    pub fn read_v2_controllers(&mut self) -> Result<()> {
        if let Some(v2) = &mut self.v2 {
            let path = v2.mount_point.join("cgroup.controllers");
            v2.controllers = parse_controller_list(&fs::read(&path)?);
        }
        Ok(())
    }

    /// Sets the v2 controllers by hand (tests, or a caller that read them itself).
    pub fn with_v2_controllers(mut self, controllers: &[&str]) -> Hierarchy {
        if let Some(v2) = &mut self.v2 {
            v2.controllers = controllers.iter().map(|c| c.to_string()).collect();
        }
        self
    }

    /// v1, v2 or hybrid; `None` when no cgroup hierarchy is mounted at all.
    pub fn mode(&self) -> Option<Mode> {
        let v1_controllers = self.v1.iter().any(|m| !m.controllers.is_empty());
        match (v1_controllers, self.v2.is_some()) {
            (true, true) => Some(Mode::Hybrid),
            (true, false) => Some(Mode::V1),
            (false, true) => Some(Mode::V2),
            (false, false) => None,
        }
    }

    /// The v1 mount that carries `controller` (`memory`, `pids`, …).
    pub fn v1_mount(&self, controller: Controller) -> Option<&V1Mount> {
        self.v1.iter().find(|m| controller.is_in(&m.controllers))
    }

    /// True when the cgroup2 root offers `controller`.
    pub fn v2_has(&self, controller: Controller) -> bool {
        self.v2
            .as_ref()
            .is_some_and(|v2| controller.is_in(&v2.controllers))
    }

    /// Where `controller` is available: v1 mount first (in a hybrid the v1
    /// mount owns it), then v2. `None` when neither has it.
    pub fn controller_location(&self, controller: Controller) -> Option<ControllerLocation<'_>> {
        if let Some(m) = self.v1_mount(controller) {
            return Some(ControllerLocation::V1(m));
        }
        if self.v2_has(controller) {
            return self.v2.as_ref().map(ControllerLocation::V2);
        }
        None
    }

    /// The v1 mount a `/proc/PID/cgroup` line refers to (same controller set
    /// or same name), or `None` for the v2 line or an unmounted hierarchy.
    pub fn v1_mount_for(&self, entry: &ProcCgroupEntry) -> Option<&V1Mount> {
        if entry.is_v2() {
            return None;
        }
        let mut wanted = entry.controllers.clone();
        wanted.sort();
        self.v1.iter().find(|m| {
            if let Some(name) = &entry.name {
                m.name.as_deref() == Some(name.as_str())
            } else {
                !wanted.is_empty() && m.controllers == wanted
            }
        })
    }

    /// The filesystem directory of the cgroup a `/proc/PID/cgroup` line names.
    pub fn dir_of(&self, entry: &ProcCgroupEntry) -> Option<PathBuf> {
        if entry.is_v2() {
            self.v2.as_ref().and_then(|v2| v2.dir(&entry.path))
        } else {
            self.v1_mount_for(entry).and_then(|m| m.dir(&entry.path))
        }
    }
}

/// Where one controller lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControllerLocation<'a> {
    /// In this v1 hierarchy.
    V1(&'a V1Mount),
    /// In the unified hierarchy.
    V2(&'a V2Mount),
}

impl V1Mount {
    /// The directory of cgroup `rel` (as `/proc/PID/cgroup` prints it), or
    /// `None` when this mount does not show that part of the hierarchy.
    pub fn dir(&self, rel: &str) -> Option<PathBuf> {
        dir_under(&self.mount_point, &self.root, rel)
    }

    /// The label `/proc/PID/cgroup` uses for this hierarchy (`cpu,cpuacct`, `name=systemd`).
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) if self.controllers.is_empty() => format!("name={name}"),
            _ => self.controllers.join(","),
        }
    }
}

impl V2Mount {
    /// The directory of cgroup `rel`, or `None` when outside this mount.
    pub fn dir(&self, rel: &str) -> Option<PathBuf> {
        dir_under(&self.mount_point, &self.root, rel)
    }
}

/// Maps a hierarchy path to a directory under a mount whose root is `root`.
fn dir_under(mount_point: &Path, root: &str, rel: &str) -> Option<PathBuf> {
    if !rel.starts_with('/') || rel.split('/').any(|c| c == "..") {
        // Paths outside our cgroup namespace print as "/../x": not reachable.
        return None;
    }
    let root = root.trim_end_matches('/');
    let inner = if root.is_empty() {
        rel
    } else if rel == root {
        ""
    } else {
        rel.strip_prefix(root).filter(|r| r.starts_with('/'))?
    };
    let inner = inner.trim_start_matches('/');
    Some(if inner.is_empty() {
        mount_point.to_path_buf()
    } else {
        mount_point.join(inner)
    })
}

/// Parses a space-separated controller list (`cgroup.controllers`, `cgroup.subtree_control`).
pub fn parse_controller_list(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

/// Maps "no such hierarchy" to an error naming what was sought.
pub(crate) fn require<'a, T>(found: Option<&'a T>, what: &str) -> Result<&'a T> {
    found.ok_or_else(|| CgroupError::NotMounted {
        what: what.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proc_cgroup::parse_proc_pid_cgroup;

    fn load(name: &str) -> String {
        std::fs::read_to_string(format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn this_machine_is_hybrid_with_separate_cpu_and_cpuacct() {
        let h = Hierarchy::from_mountinfo(&load("mountinfo-hybrid-this-machine.txt")).unwrap();
        assert_eq!(h.mode(), Some(Mode::Hybrid));
        let mem = h.v1_mount(Controller::Memory).unwrap();
        assert_eq!(mem.mount_point, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(
            h.v1_mount(Controller::Cpu).unwrap().controllers,
            vec!["cpu"]
        );
        assert_eq!(
            h.v1_mount(Controller::Cpuacct).unwrap().controllers,
            vec!["cpuacct"]
        );
        assert!(
            h.v1_mount(Controller::Freezer).is_some() && h.v1_mount(Controller::Pids).is_some()
        );
        let v2 = h.v2.as_ref().unwrap();
        assert_eq!(v2.mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
        // The name=systemd hierarchy is kept, labelled as /proc/PID/cgroup does.
        assert!(h.v1.iter().any(|m| m.label() == "name=systemd"));
        // The tmpfs at /sys/fs/cgroup is not a hierarchy.
        assert_eq!(h.v1.len(), 9);
    }

    #[test]
    fn v2_only_systemd_layout() {
        let h = Hierarchy::from_mountinfo(&load("mountinfo-v2-systemd.txt"))
            .unwrap()
            .with_v2_controllers(&["cpuset", "cpu", "io", "memory", "pids"]);
        assert_eq!(h.mode(), Some(Mode::V2));
        assert!(h.v1.is_empty());
        assert_eq!(
            h.v2.as_ref().unwrap().mount_point,
            PathBuf::from("/sys/fs/cgroup")
        );
        assert!(matches!(
            h.controller_location(Controller::Memory),
            Some(ControllerLocation::V2(_))
        ));
        assert!(h.controller_location(Controller::Freezer).is_none());
    }

    #[test]
    fn hybrid_systemd_layout_comounts_cpu_and_cpuacct() {
        let h = Hierarchy::from_mountinfo(&load("mountinfo-hybrid-systemd.txt")).unwrap();
        assert_eq!(h.mode(), Some(Mode::Hybrid));
        let cpu = h.v1_mount(Controller::Cpuacct).unwrap();
        assert_eq!(cpu.mount_point, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(cpu.controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(cpu.label(), "cpu,cpuacct");
        assert!(matches!(
            h.controller_location(Controller::Memory),
            Some(ControllerLocation::V1(_))
        ));

        // Every line of nginx's /proc/PID/cgroup maps to a directory.
        let entries = parse_proc_pid_cgroup(&load("cgroup-hybrid-systemd-nginx.txt")).unwrap();
        let mem = entries
            .iter()
            .find(|e| e.controllers == ["memory"])
            .unwrap();
        assert_eq!(
            h.dir_of(mem).unwrap(),
            PathBuf::from("/sys/fs/cgroup/memory/system.slice/nginx.service")
        );
        let cpu_entry = entries
            .iter()
            .find(|e| e.controllers == ["cpu", "cpuacct"])
            .unwrap();
        assert_eq!(
            h.dir_of(cpu_entry).unwrap(),
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/system.slice/nginx.service")
        );
        let v2 = entries.iter().find(|e| e.is_v2()).unwrap();
        assert_eq!(
            h.dir_of(v2).unwrap(),
            PathBuf::from("/sys/fs/cgroup/unified/system.slice/nginx.service")
        );
        let systemd = entries
            .iter()
            .find(|e| e.name.as_deref() == Some("systemd"))
            .unwrap();
        assert_eq!(
            h.dir_of(systemd).unwrap(),
            PathBuf::from("/sys/fs/cgroup/systemd/system.slice/nginx.service")
        );
    }

    #[test]
    fn container_bind_mounts_strip_their_root() {
        let h = Hierarchy::from_mountinfo(&load("mountinfo-v1-docker-container.txt")).unwrap();
        assert_eq!(h.mode(), Some(Mode::V1));
        let mem = h.v1_mount(Controller::Memory).unwrap();
        assert_eq!(mem.root, "/docker/0b9e5a1c7f3d");
        assert!(mem.read_only);
        assert_eq!(
            mem.dir("/docker/0b9e5a1c7f3d").unwrap(),
            PathBuf::from("/sys/fs/cgroup/memory")
        );
        assert_eq!(
            mem.dir("/docker/0b9e5a1c7f3d/sub").unwrap(),
            PathBuf::from("/sys/fs/cgroup/memory/sub")
        );
        // Outside the bind-mounted subtree, or outside our namespace: unreachable.
        assert_eq!(mem.dir("/docker/0b9e5a1c7f3dX"), None);
        assert_eq!(mem.dir("/system.slice"), None);
        assert_eq!(mem.dir("/../sibling"), None);
        // release_agent=… is an option, not a controller.
        let systemd =
            h.v1.iter()
                .find(|m| m.name.as_deref() == Some("systemd"))
                .unwrap();
        assert!(systemd.controllers.is_empty());
    }

    #[test]
    fn no_cgroup_mounts_means_no_mode() {
        let h = Hierarchy::from_mountinfo("27 1 254:0 / / rw - ext4 /dev/vda rw\n").unwrap();
        assert_eq!(h.mode(), None);
        assert!(h.controller_location(Controller::Pids).is_none());
    }

    #[test]
    fn duplicate_mounts_keep_the_first() {
        let text = "\
32 31 0:29 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
90 27 0:29 / /mnt/pids rw - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
91 27 0:38 / /mnt/unified rw - cgroup2 cgroup2 rw
";
        let h = Hierarchy::from_mountinfo(text).unwrap();
        assert_eq!(h.v1.len(), 1);
        assert_eq!(h.v1[0].mount_point, PathBuf::from("/sys/fs/cgroup/pids"));
        assert_eq!(h.v2.unwrap().mount_point, PathBuf::from("/sys/fs/cgroup"));
    }

    #[test]
    fn detect_reads_v2_controllers_from_the_mount() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let mountinfo = dir.path().join("mountinfo");
        std::fs::write(
            &mountinfo,
            format!(
                "41 31 0:38 / {} rw - cgroup2 cgroup2 rw\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let h = Hierarchy::detect_at(&mountinfo).unwrap();
        assert_eq!(h.v2.unwrap().controllers, vec!["cpu", "memory", "pids"]);
    }
}
