//! `/proc/PID/cgroup`: which cgroup a process is in, per hierarchy, and the
//! name to show an operator (its most specific cgroup and systemd unit).

use std::path::Path;

use crate::error::{CgroupError, Result};
use crate::fs;

/// One line of `/proc/PID/cgroup`: `hierarchy-ID:controller-list:cgroup-path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcCgroupEntry {
    /// The hierarchy id (`0` for the unified hierarchy).
    pub hierarchy_id: u32,
    /// The v1 controllers of the hierarchy (`["cpu", "cpuacct"]`); empty for
    /// v2 and for named hierarchies.
    pub controllers: Vec<String>,
    /// The name of a named v1 hierarchy (`systemd` for `name=systemd`).
    pub name: Option<String>,
    /// The cgroup path, relative to the reader's cgroup-namespace root.
    pub path: String,
}

impl ProcCgroupEntry {
    /// True for the unified (cgroup v2) hierarchy's line `0::/path`.
    pub fn is_v2(&self) -> bool {
        self.hierarchy_id == 0 && self.controllers.is_empty() && self.name.is_none()
    }

    /// True when the process sits at the root of this hierarchy.
    pub fn is_root(&self) -> bool {
        self.path == "/"
    }

    /// Number of path components below the root (`/a/b` → 2).
    pub fn depth(&self) -> usize {
        self.path.split('/').filter(|c| !c.is_empty()).count()
    }
}

/// Parses the text of `/proc/PID/cgroup`.
pub fn parse_proc_pid_cgroup(text: &str) -> Result<Vec<ProcCgroupEntry>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let malformed = || CgroupError::Malformed {
                what: "/proc/PID/cgroup",
                line: line.to_string(),
            };
            // The path may itself contain ':'; only the first two split.
            let mut parts = line.splitn(3, ':');
            let id = parts.next().ok_or_else(malformed)?;
            let list = parts.next().ok_or_else(malformed)?;
            let path = parts.next().ok_or_else(malformed)?;
            let hierarchy_id = id.parse::<u32>().map_err(|_| malformed())?;
            let mut controllers = Vec::new();
            let mut name = None;
            for item in list.split(',').filter(|s| !s.is_empty()) {
                match item.strip_prefix("name=") {
                    Some(n) => name = Some(n.to_string()),
                    None => controllers.push(item.to_string()),
                }
            }
            Ok(ProcCgroupEntry {
                hierarchy_id,
                controllers,
                name,
                path: path.to_string(),
            })
        })
        .collect()
}

/// Reads `/proc/PID/cgroup`. A vanished process gives an error whose
/// [`CgroupError::is_gone`] is true.
pub fn read_pid_cgroup(pid: i32) -> Result<Vec<ProcCgroupEntry>> {
    read_pid_cgroup_at(Path::new("/proc"), pid)
}

/// [`read_pid_cgroup`] under another procfs root (tests, containers).
pub fn read_pid_cgroup_at(proc_root: &Path, pid: i32) -> Result<Vec<ProcCgroupEntry>> {
    parse_proc_pid_cgroup(&fs::read(&proc_root.join(pid.to_string()).join("cgroup"))?)
}

/// The entry to show for a process: the one naming a systemd unit if any,
/// else the deepest path. Ties go to the unified hierarchy, then to
/// `name=systemd`, then to the first line. `None` only for empty input.
pub fn most_specific(entries: &[ProcCgroupEntry]) -> Option<&ProcCgroupEntry> {
    let key = |e: &ProcCgroupEntry| {
        let preference = if e.is_v2() {
            2
        } else if e.name.as_deref() == Some("systemd") {
            1
        } else {
            0
        };
        (systemd_unit_of(&e.path).is_some(), e.depth(), preference)
    };
    let mut best: Option<&ProcCgroupEntry> = None;
    for e in entries {
        if best.is_none_or(|b| key(e) > key(b)) {
            best = Some(e);
        }
    }
    best
}

/// The systemd unit a cgroup path belongs to: its deepest `.service` or
/// `.scope` component (`/system.slice/nginx.service` → `nginx.service`;
/// `/system.slice/nginx.service/worker` → `nginx.service`). Slices and
/// paths outside systemd's tree give `None`.
pub fn systemd_unit_of(path: &str) -> Option<&str> {
    path.split('/').rev().find(|c| {
        [".service", ".scope"]
            .iter()
            .any(|suffix| c.strip_suffix(suffix).is_some_and(|stem| !stem.is_empty()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(name: &str) -> Vec<ProcCgroupEntry> {
        let text =
            std::fs::read_to_string(format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR")))
                .unwrap();
        parse_proc_pid_cgroup(&text).unwrap()
    }

    #[test]
    fn this_machine_names_the_memory_cgroup() {
        let entries = load("cgroup-hybrid-this-machine.txt");
        assert_eq!(entries.len(), 10);
        let v2 = entries.iter().find(|e| e.is_v2()).unwrap();
        assert!(v2.is_root());
        let shown = most_specific(&entries).unwrap();
        assert_eq!(shown.controllers, vec!["memory"]);
        assert_eq!(shown.path, "/process_api/b33dcc72b90c7ab72873868149a86c2f");
        assert_eq!(systemd_unit_of(&shown.path), None);
    }

    #[test]
    fn hybrid_systemd_names_the_service() {
        let entries = load("cgroup-hybrid-systemd-nginx.txt");
        assert_eq!(entries.len(), 14);
        let cpu = entries.iter().find(|e| e.hierarchy_id == 3).unwrap();
        assert_eq!(cpu.controllers, vec!["cpu", "cpuacct"]);
        let named = entries.iter().find(|e| e.hierarchy_id == 1).unwrap();
        assert_eq!(named.name.as_deref(), Some("systemd"));
        assert!(named.controllers.is_empty() && !named.is_v2());
        // All unit-bearing entries are equally deep: the unified one wins.
        let shown = most_specific(&entries).unwrap();
        assert!(shown.is_v2());
        assert_eq!(systemd_unit_of(&shown.path), Some("nginx.service"));
    }

    #[test]
    fn v2_user_session_names_the_scope() {
        let entries = load("cgroup-v2-systemd-user.txt");
        let shown = most_specific(&entries).unwrap();
        assert_eq!(
            systemd_unit_of(&shown.path),
            Some("vte-spawn-5c1c8d07.scope")
        );
    }

    #[test]
    fn container_paths_have_no_unit() {
        let entries = load("cgroup-v1-docker-container.txt");
        let shown = most_specific(&entries).unwrap();
        assert_eq!(shown.path, "/docker/0b9e5a1c7f3d");
        assert_eq!(shown.name.as_deref(), Some("systemd"));
        assert_eq!(systemd_unit_of(&shown.path), None);
    }

    #[test]
    fn unit_names() {
        assert_eq!(
            systemd_unit_of("/system.slice/nginx.service"),
            Some("nginx.service")
        );
        assert_eq!(
            systemd_unit_of("/system.slice/nginx.service/worker"),
            Some("nginx.service")
        );
        assert_eq!(
            systemd_unit_of("/user.slice/user-1000.slice/session-2.scope"),
            Some("session-2.scope")
        );
        assert_eq!(
            systemd_unit_of("/system.slice/system-getty.slice/getty@tty1.service"),
            Some("getty@tty1.service")
        );
        assert_eq!(systemd_unit_of("/system.slice"), None);
        assert_eq!(systemd_unit_of("/user.slice/user-1000.slice"), None);
        assert_eq!(systemd_unit_of("/"), None);
        assert_eq!(systemd_unit_of("/.service"), None);
    }

    #[test]
    fn unit_beats_a_deeper_anonymous_path() {
        let entries = parse_proc_pid_cgroup(
            "4:memory:/kubepods/burstable/pod1/abc\n1:name=systemd:/system.slice/kubelet.service\n",
        )
        .unwrap();
        assert_eq!(most_specific(&entries).unwrap().hierarchy_id, 1);
        assert!(most_specific(&[]).is_none());
    }

    #[test]
    fn paths_with_colons_and_bad_lines() {
        let e = parse_proc_pid_cgroup("0::/a:b\n").unwrap();
        assert_eq!(e[0].path, "/a:b");
        assert!(parse_proc_pid_cgroup("garbage\n").is_err());
        assert!(parse_proc_pid_cgroup("x:memory:/\n").is_err());
    }

    #[test]
    fn reads_from_a_proc_root_and_reports_gone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("42")).unwrap();
        std::fs::write(dir.path().join("42/cgroup"), "0::/test.scope\n").unwrap();
        let e = read_pid_cgroup_at(dir.path(), 42).unwrap();
        assert_eq!(e[0].path, "/test.scope");
        let err = read_pid_cgroup_at(dir.path(), 43).unwrap_err();
        assert!(err.is_gone(), "{err}");
    }

    #[test]
    fn reads_our_own_cgroup() {
        let e = read_pid_cgroup(std::process::id() as i32).unwrap();
        assert!(!e.is_empty());
        assert!(e.iter().all(|x| x.path.starts_with('/')));
    }
}
