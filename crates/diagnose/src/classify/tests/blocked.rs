//! Blocked tasks from recorded snapshots: D state on a silent FUSE server
//! and on a network filesystem.

use super::*;

#[test]
fn d_state_task_on_a_silent_fuse_server() {
    let fx = Fixture::load("d_state");
    let mut tracker = DStateTracker::new(Path::new("/nonexistent"));
    let t0 = Instant::now();
    tracker.scan_root(&fx.root("t0").join("proc"), t0);
    let t1 = t0 + fx.interval();
    tracker.scan_root(&fx.root("t1").join("proc"), t1);
    let stuck = tracker.stuck(t1, Duration::from_secs(2));
    assert_eq!(stuck.len(), 1, "{stuck:?}");
    assert_eq!(stuck[0].comm, "cat");
    // Not yet at a 3 s bound.
    assert!(tracker.stuck(t1, Duration::from_secs(3)).is_empty());

    let r = run(
        &fx,
        Trigger::DState {
            tids: vec![stuck[0].tid],
        },
        &[],
        &stuck,
        Thresholds::default(),
    );
    assert_eq!(r.classes(), vec![Class::DState], "{:#?}", r.diagnoses);
    let d = r.only(Class::DState);
    assert_eq!(d.culprit.pid, Some(stuck[0].pid));
    assert_eq!(d.culprit.comm.as_deref(), Some("cat"));
    assert_eq!(d.culprit.cgroup.as_deref(), Some(fx.cgroup().as_str()));
    assert!(d.summary.contains("folio_wait_bit_common"), "{}", d.summary);
    let evidence = d.evidence.to_value();
    let stack = evidence["kernel_stack"].as_array().unwrap();
    assert!(stack
        .iter()
        .any(|l| l.as_str().unwrap().contains("filemap_read")));
    assert!(d.evidence.to_value()["stalled_devices"]
        .as_array()
        .unwrap()
        .is_empty());
}

/// The same waiter, its file on an NFS mount instead: the server is
/// named from the mount source, and nothing is acted on (no target, no
/// blocker recovery can act on: killing the waiter would only destroy its
/// work when the server comes back).
#[test]
fn a_waiter_on_a_network_filesystem_names_the_server_and_is_never_acted_on() {
    let fx = Fixture::load("d_state");
    let mut tracker = DStateTracker::new(Path::new("/nonexistent"));
    let t0 = Instant::now();
    tracker.scan_root(&fx.root("t0").join("proc"), t0);
    let t1 = t0 + fx.interval();
    tracker.scan_root(&fx.root("t1").join("proc"), t1);
    let stuck = tracker.stuck(t1, Duration::from_secs(2));
    assert_eq!(stuck.len(), 1, "{stuck:?}");
    // What /proc shows for a read(2) of fd 3, a file on an NFS mount.
    let pdir = fx.root("t1").join(format!("proc/{}", stuck[0].pid));
    let tdir = pdir.join(format!("task/{}", stuck[0].tid));
    std::fs::create_dir_all(&tdir).unwrap();
    std::fs::write(
        tdir.join("syscall"),
        "0 0x3 0x7f42129a9000 0x20000 0x7f4212a3cb60 0xffffffff 0x0 0x7fff2187e498 0x7f4212b252ad\n",
    )
    .unwrap();
    std::fs::write(
        pdir.join("mountinfo"),
        "22 1 254:0 / / rw - ext4 /dev/vda rw\n\
         48 22 0:53 / /mnt/home rw,relatime - nfs4 fileserver:/export/home rw,vers=4.2\n",
    )
    .unwrap();
    std::fs::create_dir_all(pdir.join("fdinfo")).unwrap();
    std::fs::write(
        pdir.join("fdinfo/3"),
        "pos:\t0\nflags:\t0100000\nmnt_id:\t48\n",
    )
    .unwrap();
    std::fs::create_dir_all(pdir.join("fd")).unwrap();
    std::os::unix::fs::symlink("/mnt/home/report.txt", pdir.join("fd/3")).unwrap();

    let r = run(
        &fx,
        Trigger::DState {
            tids: vec![stuck[0].tid],
        },
        &[],
        &stuck,
        Thresholds::default(),
    );
    assert_eq!(r.classes(), vec![Class::DState], "{:#?}", r.diagnoses);
    let d = r.only(Class::DState);
    let b = &d.evidence.to_value()["blocker"];
    assert_eq!(b["kind"], "network_fs", "{b}");
    assert_eq!(b["server"], "fileserver", "{b}");
    assert!(d.summary.contains("fileserver"), "{}", d.summary);
    // Recorded, never acted on: no target, nothing recovery could act on.
    assert!(d.target.is_none(), "{:?}", d.target);
    assert!(d.blocker.is_none(), "{:?}", d.blocker);
    assert!(d.no_target.is_some());
    let incident = d.incident(t1, std::time::SystemTime::now());
    assert!(incident.target.is_none() && incident.blocker.is_none());
    // The default ladder records it and calls nothing, though the waiter
    // is there to be signalled.
    let f = std::sync::Arc::new(selfheal_recover::fake::FakeSystem::new(1));
    f.add(selfheal_recover::ProcInfo {
        pid: stuck[0].pid,
        ppid: 1,
        comm: stuck[0].comm.clone(),
        starttime: stuck[0].starttime,
        uid: Some(0),
        kernel_thread: false,
        cgroups: vec![fx.cgroup()],
        unit: None,
        pgid: stuck[0].pid,
        sid: stuck[0].pid,
        state: 'D',
    });
    let mut ladder = selfheal_recover::Ladder::new(
        Box::new(f.clone()),
        selfheal_recover::LadderOptions::new(selfheal_config::RecoveryConfig::default(), false),
    );
    let report = ladder.run(&incident, &mut || false, &selfheal_event::MemorySink::new());
    assert_eq!(report.steps[0].action.as_str(), "record");
    assert!(
        report.steps.iter().all(|s| s.touched.is_empty()),
        "{:?}",
        report.steps
    );
    assert!(f.calls().is_empty(), "{:?}", f.calls());
}
