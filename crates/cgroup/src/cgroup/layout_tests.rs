//! Which directories a process's cgroup spans, on captured layouts.

use std::path::PathBuf;

use super::*;
use crate::proc_cgroup::parse_proc_pid_cgroup;

fn load(name: &str) -> String {
    std::fs::read_to_string(format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn open(mountinfo: &str, cgroup: &str) -> Cgroup {
    let h = Hierarchy::from_mountinfo(&load(mountinfo)).unwrap();
    Cgroup::from_proc_entries(&h, &parse_proc_pid_cgroup(&load(cgroup)).unwrap()).unwrap()
}

#[test]
fn hybrid_systemd_service_spans_its_unit_dirs_but_not_root_ones() {
    let cg = open(
        "mountinfo-hybrid-systemd.txt",
        "cgroup-hybrid-systemd-nginx.txt",
    );
    let dirs = cg.dirs();
    let expect = |p: &str| PathBuf::from(format!("/sys/fs/cgroup/{p}/system.slice/nginx.service"));
    assert!(dirs.contains(&expect("pids")));
    assert!(dirs.contains(&expect("memory")));
    assert!(dirs.contains(&expect("cpu,cpuacct")));
    assert!(dirs.contains(&expect("unified")));
    // freezer and cpuset have nginx at the root: acting there would hit everyone.
    assert!(!dirs.iter().any(|d| d.starts_with("/sys/fs/cgroup/freezer")));
    assert!(!dirs.iter().any(|d| d.starts_with("/sys/fs/cgroup/cpuset")));
    // devices/blkio/name=systemd are not acted on.
    assert!(!dirs.iter().any(|d| d.starts_with("/sys/fs/cgroup/devices")));
    assert_eq!(dirs.len(), 4);
    assert_eq!(cg.managers()[1].version(), Version::V2);
    assert!(cg
        .describe()
        .contains("cpu,cpuacct:/system.slice/nginx.service"));
}

#[test]
fn this_machine_session_spans_only_its_memory_cgroup() {
    let cg = open(
        "mountinfo-hybrid-this-machine.txt",
        "cgroup-hybrid-this-machine.txt",
    );
    assert_eq!(
        cg.dirs(),
        vec![PathBuf::from(
            "/sys/fs/cgroup/memory/process_api/b33dcc72b90c7ab72873868149a86c2f"
        )]
    );
}

#[test]
fn a_process_at_the_root_everywhere_keeps_root_dirs_and_is_refused() {
    let h = Hierarchy::from_mountinfo(&load("mountinfo-hybrid-this-machine.txt")).unwrap();
    let entries = parse_proc_pid_cgroup("8:pids:/\n4:memory:/\n0::/\n").unwrap();
    let cg = Cgroup::from_proc_entries(&h, &entries).unwrap();
    assert!(cg.managers().iter().all(|m| m.is_root()));
    let err = cg.check_safe_to_act().unwrap_err();
    assert!(err.to_string().contains("root of its hierarchy"), "{err}");
}

#[test]
fn container_view_maps_through_the_bind_mount_root() {
    let cg = open(
        "mountinfo-v1-docker-container.txt",
        "cgroup-v1-docker-container.txt",
    );
    // Inside the container, its own cgroup is the mount point: the root as
    // far as it can see, so it is kept (every line is "root") and refused.
    assert!(cg.dirs().contains(&PathBuf::from("/sys/fs/cgroup/memory")));
    assert!(cg.managers().iter().all(|m| m.is_root()));
}

#[test]
fn v2_only_layout_opens_one_v2_dir() {
    let h = Hierarchy::from_mountinfo(&load("mountinfo-v2-systemd.txt")).unwrap();
    let entries = parse_proc_pid_cgroup(&load("cgroup-v2-systemd-user.txt")).unwrap();
    let cg = Cgroup::from_proc_entries(&h, &entries).unwrap();
    assert_eq!(cg.managers().len(), 1);
    assert_eq!(cg.managers()[0].version(), Version::V2);
    assert!(cg.dirs()[0].ends_with("vte-spawn-5c1c8d07.scope"));
}

#[test]
fn new_spans_v1_controllers_plus_unified_in_a_hybrid() {
    let h = Hierarchy::from_mountinfo(&load("mountinfo-hybrid-this-machine.txt")).unwrap();
    let cg = Cgroup::new(
        &h,
        "/sb/x",
        &[Controller::Pids, Controller::Memory, Controller::Freezer],
    )
    .unwrap();
    assert_eq!(cg.managers().len(), 2);
    assert_eq!(
        cg.procs_files(),
        vec![
            PathBuf::from("/sys/fs/cgroup/pids/sb/x/cgroup.procs"),
            PathBuf::from("/sys/fs/cgroup/memory/sb/x/cgroup.procs"),
            PathBuf::from("/sys/fs/cgroup/freezer/sb/x/cgroup.procs"),
            PathBuf::from("/sys/fs/cgroup/unified/sb/x/cgroup.procs"),
        ]
    );
    let v2 = Hierarchy::from_mountinfo(&load("mountinfo-v2-systemd.txt"))
        .unwrap()
        .with_v2_controllers(&["memory", "pids"]);
    let cg = Cgroup::new(
        &v2,
        "/sb/x",
        &[Controller::Pids, Controller::Memory, Controller::Freezer],
    )
    .unwrap();
    assert_eq!(cg.dirs(), vec![PathBuf::from("/sys/fs/cgroup/sb/x")]);
    let err = Cgroup::new(&v2, "/sb/x", &[Controller::Cpuset]).unwrap_err();
    assert!(err.to_string().contains("cpuset"), "{err}");
}
