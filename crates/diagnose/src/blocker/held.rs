//! Held on purpose: the checks that a task (or the process it waits for)
//! is frozen by a cgroup freezer, stopped, traced or I/O-throttled, each
//! naming the file that says so.

use std::path::{Path, PathBuf};

use selfheal_cgroup::controller::freezer::parse_v1_state;
use selfheal_cgroup::controller::io::{read_throttle_rules, ThrottleRule};
use selfheal_cgroup::{read_pid_cgroup_at, FreezerState, Hierarchy};
use selfheal_procfs::task::{list_tids, parse_task_stat};

use crate::pseudo_file::read_small;

/// A freezer that holds a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrozenBy {
    /// The cgroup (as `/proc/PID/cgroup` names it).
    pub cgroup: String,
    /// `v1` (freezer controller) or `v2` (`cgroup.freeze`).
    pub version: &'static str,
    /// The file that says so.
    pub file: PathBuf,
    /// What it says (`FROZEN`, `FREEZING`, `frozen 1`, `cgroup.freeze 1`).
    pub state: String,
}

/// The cgroup freezer holding `pid`, if any: v1 `freezer.state` FROZEN or
/// FREEZING; v2 `cgroup.events` `frozen 1`, or `cgroup.freeze` 1 on the
/// cgroup or an ancestor (freezing in progress).
pub fn frozen_cgroup(h: &Hierarchy, proc_root: &Path, pid: i32) -> Option<FrozenBy> {
    let entries = read_pid_cgroup_at(proc_root, pid).ok()?;
    for e in &entries {
        let Some(dir) = h.dir_of(e) else { continue };
        if e.is_v2() {
            let top = h.v2.as_ref()?.mount_point.clone();
            for d in dir
                .ancestors()
                .take_while(|d| d.starts_with(&top) && *d != top)
            {
                let events = d.join("cgroup.events");
                if read_small(&events).is_some_and(|t| t.lines().any(|l| l.trim() == "frozen 1")) {
                    return Some(FrozenBy {
                        cgroup: e.path.clone(),
                        version: "v2",
                        file: events,
                        state: "frozen 1".into(),
                    });
                }
                let freeze = d.join("cgroup.freeze");
                if read_small(&freeze).is_some_and(|t| t.trim() == "1") {
                    return Some(FrozenBy {
                        cgroup: e.path.clone(),
                        version: "v2",
                        file: freeze,
                        state: "cgroup.freeze 1".into(),
                    });
                }
            }
        } else if e.controllers.iter().any(|c| c == "freezer") {
            // The root of the hierarchy has no freezer.state.
            let file = dir.join("freezer.state");
            let Some(text) = read_small(&file) else {
                continue;
            };
            let Some(state) = parse_v1_state(&text) else {
                continue;
            };
            if matches!(state, FreezerState::Frozen | FreezerState::Freezing) {
                return Some(FrozenBy {
                    cgroup: e.path.clone(),
                    version: "v1",
                    file,
                    state: text.trim().to_string(),
                });
            }
        }
    }
    None
}

/// Every I/O throttle rule that applies to `pid`: v1 blkio throttle files
/// and v2 `io.max`, in its cgroups and their ancestors (limits nest).
pub fn throttle_rules(h: &Hierarchy, proc_root: &Path, pid: i32) -> Vec<ThrottleRule> {
    let Ok(entries) = read_pid_cgroup_at(proc_root, pid) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in &entries {
        let top = if e.is_v2() {
            h.v2.as_ref().map(|m| m.mount_point.clone())
        } else if e.controllers.iter().any(|c| c == "blkio" || c == "io") {
            h.v1_mount_for(e).map(|m| m.mount_point.clone())
        } else {
            None
        };
        let (Some(top), Some(dir)) = (top, h.dir_of(e)) else {
            continue;
        };
        for d in dir.ancestors().take_while(|d| d.starts_with(&top)) {
            out.extend(read_throttle_rules(d));
        }
    }
    out
}

/// The whole disk a partition belongs to (`/sys/dev/block/M:m/partition`
/// exists for partitions), else the device itself. Throttle rules name
/// whole disks.
pub fn whole_disk(sys_root: &Path, dev: (u32, u32)) -> (u32, u32) {
    let dir = sys_root.join(format!("dev/block/{}:{}", dev.0, dev.1));
    if !dir.join("partition").exists() {
        return dev;
    }
    read_small(&dir.join("../dev"))
        .and_then(|t| {
            let (a, b) = t.trim().split_once(':')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .unwrap_or(dev)
}

/// Why a process is not running on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopState {
    /// Job-control stop (SIGSTOP, Ctrl-Z): every thread in `T`.
    Stopped,
    /// A debugger holds a thread (`t`); its tracer's pid when readable.
    Traced {
        /// `TracerPid` of a traced thread.
        tracer: Option<i32>,
    },
}

/// Whether `pid` is stopped or traced, from its threads' states.
pub fn stop_state(proc_root: &Path, pid: i32) -> Option<StopState> {
    let tids = list_tids(proc_root, pid).ok()?;
    let mut states = Vec::with_capacity(tids.len());
    let mut traced = None;
    for tid in tids {
        let dir = proc_root.join(format!("{pid}/task/{tid}"));
        let Some(st) = read_small(&dir.join("stat")).and_then(|t| parse_task_stat(&t)) else {
            continue;
        };
        if st.state == 't' && traced.is_none() {
            traced = Some(
                read_small(&dir.join("status"))
                    .map(|t| parse_tracer(&t))
                    .unwrap_or_default(),
            );
        }
        states.push(st.state);
    }
    if let Some(tracer) = traced {
        return Some(StopState::Traced { tracer });
    }
    (!states.is_empty() && states.iter().all(|s| *s == 'T')).then_some(StopState::Stopped)
}

fn parse_tracer(status: &str) -> Option<i32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse().ok())
        .filter(|p| *p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake /proc and cgroup tree with one process in a v1 freezer cgroup
    /// and a v2 cgroup.
    fn tree(
        v1_state: &str,
        v2_events: &str,
        v2_parent_freeze: &str,
    ) -> (tempfile::TempDir, Hierarchy) {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("proc/42")).unwrap();
        std::fs::write(
            root.join("proc/42/cgroup"),
            "7:blkio:/box\n6:freezer:/box\n0::/parent/box\n",
        )
        .unwrap();
        let fz = root.join("cg/freezer/box");
        std::fs::create_dir_all(&fz).unwrap();
        std::fs::write(fz.join("freezer.state"), v1_state).unwrap();
        let v2 = root.join("cg/unified/parent/box");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v2.join("cgroup.events"), v2_events).unwrap();
        std::fs::write(v2.join("cgroup.freeze"), "0\n").unwrap();
        std::fs::write(
            root.join("cg/unified/parent/cgroup.freeze"),
            v2_parent_freeze,
        )
        .unwrap();
        let bk = root.join("cg/blkio/box");
        std::fs::create_dir_all(&bk).unwrap();
        std::fs::write(bk.join("blkio.throttle.read_bps_device"), "7:0 16\n").unwrap();
        std::fs::write(root.join("cg/blkio/blkio.throttle.read_bps_device"), "").unwrap();
        let cg = root.join("cg");
        let mi = format!(
            "30 20 0:26 / {0}/freezer rw - cgroup cgroup rw,freezer\n\
             31 20 0:27 / {0}/blkio rw - cgroup cgroup rw,blkio\n\
             32 20 0:28 / {0}/unified rw - cgroup2 cgroup2 rw\n",
            cg.display()
        );
        let h = Hierarchy::from_mountinfo(&mi).unwrap();
        (d, h)
    }

    #[test]
    fn v1_frozen_names_freezer_state() {
        let (d, h) = tree("FROZEN\n", "populated 1\nfrozen 0\n", "0\n");
        let f = frozen_cgroup(&h, &d.path().join("proc"), 42).unwrap();
        assert_eq!(
            (f.version, f.state.as_str(), f.cgroup.as_str()),
            ("v1", "FROZEN", "/box")
        );
        assert!(f.file.ends_with("freezer/box/freezer.state"));
        let (d, h) = tree("THAWED\n", "populated 1\nfrozen 0\n", "0\n");
        assert_eq!(frozen_cgroup(&h, &d.path().join("proc"), 42), None);
    }

    #[test]
    fn v2_frozen_behind_a_v1_freezer_root() {
        // In the v1 freezer's root (no freezer.state there), frozen in v2.
        let (d, h) = tree("THAWED\n", "populated 1\nfrozen 1\n", "0\n");
        std::fs::write(
            d.path().join("proc/42/cgroup"),
            "6:freezer:/\n0::/parent/box\n",
        )
        .unwrap();
        let f = frozen_cgroup(&h, &d.path().join("proc"), 42).unwrap();
        assert_eq!((f.version, f.state.as_str()), ("v2", "frozen 1"));
    }

    #[test]
    fn v2_frozen_or_freezing_through_an_ancestor() {
        let (d, h) = tree("THAWED\n", "populated 1\nfrozen 1\n", "0\n");
        let f = frozen_cgroup(&h, &d.path().join("proc"), 42).unwrap();
        assert_eq!((f.version, f.state.as_str()), ("v2", "frozen 1"));
        let (d, h) = tree("THAWED\n", "populated 1\nfrozen 0\n", "1\n");
        let f = frozen_cgroup(&h, &d.path().join("proc"), 42).unwrap();
        assert!(f.file.ends_with("unified/parent/cgroup.freeze"), "{f:?}");
    }

    #[test]
    fn throttle_rules_of_the_cgroup_chain() {
        let (d, h) = tree("THAWED\n", "frozen 0\n", "0\n");
        let r = throttle_rules(&h, &d.path().join("proc"), 42);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(
            (r[0].major, r[0].minor, r[0].value, r[0].limit),
            (7, 0, 16, "rbps")
        );
    }

    #[test]
    fn stopped_and_traced_processes() {
        let d = tempfile::tempdir().unwrap();
        let put = |tid: i32, state: char, tracer: i32| {
            let dir = d.path().join(format!("9/task/{tid}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("stat"),
                format!("{tid} (srv) {state} 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 100 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n"),
            )
            .unwrap();
            std::fs::write(
                dir.join("status"),
                format!("Name:\tsrv\nTracerPid:\t{tracer}\n"),
            )
            .unwrap();
        };
        put(9, 'T', 0);
        put(10, 'T', 0);
        assert_eq!(stop_state(d.path(), 9), Some(StopState::Stopped));
        put(10, 't', 77);
        assert_eq!(
            stop_state(d.path(), 9),
            Some(StopState::Traced { tracer: Some(77) })
        );
        put(9, 'S', 0);
        put(10, 'S', 0);
        assert_eq!(stop_state(d.path(), 9), None);
    }
}
