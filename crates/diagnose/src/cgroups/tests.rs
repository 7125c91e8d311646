//! Tests of the cgroup scanner, on captured cgroupfs text and on real
//! sandboxes.

use super::*;

#[test]
fn v1_memory_stat_from_this_machine() {
    // Lines captured from /sys/fs/cgroup/memory/memory.stat (v1).
    let stat = "cache 9891840\nrss 8519680\nshmem 9084928\ntotal_cache 4970516480\n\
                total_rss 935165952\ntotal_shmem 9084928\nhierarchical_memory_limit 268435456\n";
    let m = parse_memory(false, stat, 268_435_456, 300_000_000, Some(7), None);
    assert_eq!(m.unreclaimable_bytes, 935_165_952 + 9_084_928);
    assert!(m.percent() > 100.0);
    assert_eq!(m.limit_hits, Some(7));
    assert_eq!(m.psi_some_avg10, None);
}

#[test]
fn v2_memory_with_pressure() {
    let stat = "anon 200000000\nfile 50000000\nshmem 1000000\n";
    let pressure = "some avg10=12.50 avg60=3.00 avg300=0.00 total=15314\n\
                    full avg10=4.00 avg60=0.00 avg300=0.00 total=3024\n";
    let m = parse_memory(true, stat, 256 << 20, 251_000_000, Some(3), Some(pressure));
    assert_eq!(m.unreclaimable_bytes, 201_000_000);
    assert!((m.percent() - 74.88).abs() < 0.1, "{}", m.percent());
    assert_eq!(
        (m.psi_some_avg10, m.psi_full_avg10),
        (Some(12.5), Some(4.0))
    );
}

#[test]
fn walks_limited_cgroups_in_a_fake_tree() {
    let d = tempfile::tempdir().unwrap();
    let mem = d.path().join("memory");
    let pids = d.path().join("pids");
    let box_mem = mem.join("selfheal-sandbox/hog");
    let box_pids = pids.join("selfheal-sandbox/hog");
    std::fs::create_dir_all(&box_mem).unwrap();
    std::fs::create_dir_all(&box_pids).unwrap();
    std::fs::create_dir_all(mem.join("unlimited")).unwrap();
    std::fs::write(
        mem.join("unlimited/memory.limit_in_bytes"),
        "9223372036854771712\n",
    )
    .unwrap();
    std::fs::write(
        box_mem.join("memory.stat"),
        "total_rss 241172480\ntotal_shmem 0\nhierarchical_memory_limit 268435456\n",
    )
    .unwrap();
    std::fs::write(box_mem.join("memory.limit_in_bytes"), "268435456\n").unwrap();
    std::fs::write(box_mem.join("memory.usage_in_bytes"), "250000000\n").unwrap();
    std::fs::write(box_mem.join("memory.failcnt"), "0\n").unwrap();
    std::fs::write(box_mem.join("cgroup.procs"), "41\n42\n").unwrap();
    std::fs::write(box_pids.join("pids.max"), "20\n").unwrap();
    std::fs::write(box_pids.join("pids.current"), "20\n").unwrap();
    std::fs::write(box_pids.join("pids.events"), "max 5\n").unwrap();
    let roots = CgroupRoots {
        memory: Some((mem.clone(), false)),
        pids: Some((pids.clone(), false)),
        unified: None,
    };
    let mut s = CgroupScanner::new(roots, Duration::from_secs(60));
    let first = s.scan();
    assert_eq!(first.len(), 1, "{first:?}");
    let u = &first[0];
    assert_eq!(u.path, "/selfheal-sandbox/hog");
    assert!((u.memory.unwrap().percent() - 89.84).abs() < 0.1);
    let p = u.pids.unwrap();
    assert_eq!((p.current, p.max, p.refused_recently), (20, 20, 5));
    std::fs::write(box_pids.join("pids.events"), "max 9\n").unwrap();
    assert_eq!(s.scan()[0].pids.unwrap().refused_recently, 4);
    assert_eq!(s.members("/selfheal-sandbox/hog"), vec![41, 42]);
    // Lazy: usage (250 MB, 93%) is below 95%, so memory.stat is skipped
    // and the usage stands in for the unreclaimable figure.
    s.set_detail_above(Some(95.0));
    let lazy = s.scan()[0].memory.unwrap();
    assert_eq!(lazy.unreclaimable_bytes, 250_000_000);
    s.set_detail_above(Some(50.0));
    assert_eq!(s.scan()[0].memory.unwrap().unreclaimable_bytes, 241_172_480);
    // The counter files stay open between sweeps, and across a walk.
    assert_eq!(s.open_files(), 3);
    s.walk();
    assert_eq!(s.scan().len(), 1);
    assert_eq!(s.open_files(), 3);
    std::fs::remove_dir_all(mem.join("selfheal-sandbox")).unwrap();
    std::fs::remove_dir_all(pids.join("selfheal-sandbox")).unwrap();
    // Unlinked plain files still read through their descriptors (a
    // removed cgroup's do not: see the test on real cgroups below);
    // the next walk forgets them.
    s.walk();
    assert!(s.scan().is_empty());
    assert_eq!(s.open_files(), 0);
}

#[test]
fn one_hierarchy_for_both_controllers_is_listed_once() {
    // v2: memory.max and pids.max side by side in each cgroup.
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let put = |cg: &str, file: &str, text: &str| {
        std::fs::create_dir_all(root.join(cg)).unwrap();
        std::fs::write(root.join(cg).join(file), text).unwrap();
    };
    put("both", "memory.max", "1073741824\n");
    put("both", "pids.max", "50\n");
    put("both", "memory.current", "1000\n");
    put("both", "pids.current", "3\n");
    put("both", "pids.events", "max 0\n");
    put("both/pids-only", "memory.max", "max\n");
    put("both/pids-only", "pids.max", "10\n");
    put("both/pids-only", "pids.current", "1\n");
    put("unlimited", "memory.max", "max\n");
    put("unlimited", "pids.max", "max\n");
    let roots = CgroupRoots {
        memory: Some((root.clone(), true)),
        pids: Some((root.clone(), true)),
        unified: Some(root.clone()),
    };
    let mut s = CgroupScanner::new(roots, Duration::from_secs(60));
    s.set_detail_above(Some(90.0));
    let mut u = s.scan();
    u.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(
        s.last_walk_dirs(),
        4,
        "root, both, both/pids-only, unlimited"
    );
    assert_eq!(u.len(), 2, "{u:?}");
    assert_eq!(u[0].path, "/both");
    assert_eq!(u[0].memory.unwrap().usage_bytes, 1000);
    assert_eq!(
        (u[0].pids.unwrap().current, u[0].pids.unwrap().max),
        (3, 50)
    );
    assert_eq!(u[1].path, "/both/pids-only");
    assert!(u[1].memory.is_none());
    assert_eq!(u[1].pids.unwrap().max, 10);
}

#[test]
fn a_descriptor_budget_caps_the_kept_files() {
    let d = tempfile::tempdir().unwrap();
    let pids = d.path().join("pids");
    let n = KEPT_FILES_MAX / 2 + 5;
    for i in 0..n {
        let dir = pids.join(format!("c{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pids.max"), "100\n").unwrap();
        std::fs::write(dir.join("pids.current"), format!("{i}\n")).unwrap();
        std::fs::write(dir.join("pids.events"), "max 0\n").unwrap();
    }
    let roots = CgroupRoots {
        memory: None,
        pids: Some((pids, false)),
        unified: None,
    };
    let mut s = CgroupScanner::new(roots, Duration::from_secs(60));
    let usages = s.scan();
    assert_eq!(usages.len(), n);
    // Every cgroup is read, over the budget too; only the budget is held.
    let mut current: Vec<u64> = usages.iter().map(|u| u.pids.unwrap().current).collect();
    current.sort_unstable();
    assert_eq!(current, (0..n as u64).collect::<Vec<_>>());
    let soft = selfheal_sys::rlimit::raise_nofile_limit(0).unwrap();
    let budget = KEPT_FILES_MAX.min(soft as usize / 8);
    assert_eq!(s.open_files(), budget, "open-file limit {soft}");
}

/// Removes what the test created, children first, even when it fails.
struct Cleanup {
    child: Option<std::process::Child>,
    dirs: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[test]
fn kept_files_follow_real_cgroups_that_vanish_appear_and_come_back() {
    let test = "kept_files_follow_real_cgroups_that_vanish_appear_and_come_back";
    if !selfheal_sys::process::is_root() {
        eprintln!("SKIP {test}: creating cgroups needs root");
        return;
    }
    let Some((root, v2)) = CgroupRoots::detect().pids else {
        eprintln!("SKIP {test}: no pids controller mounted");
        return;
    };
    let name = format!("selfheal-scan-test-{}", std::process::id());
    let parent = root.join(&name);
    if let Err(e) = std::fs::create_dir(&parent) {
        eprintln!("SKIP {test}: cannot create {}: {e}", parent.display());
        return;
    }
    let mut cleanup = Cleanup {
        child: None,
        dirs: vec![parent.clone()],
    };
    let mkcg = |leaf: &str, max: u64| {
        let dir = parent.join(leaf);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("pids.max"), format!("{max}\n")).unwrap();
        dir
    };
    let a = mkcg("a", 7);
    cleanup.dirs.push(a.clone());
    let roots = CgroupRoots {
        memory: None,
        pids: Some((root.clone(), v2)),
        unified: None,
    };
    // Walks only when told to (a walk is what finds new cgroups).
    let mut s = CgroupScanner::new(roots, Duration::from_secs(3600));
    let (pa, pb) = (format!("/{name}/a"), format!("/{name}/b"));
    let find = |u: &[CgroupUsage], p: &str| u.iter().find(|u| u.path == p).cloned();
    let first = s.scan();
    let ua = find(&first, &pa).expect("the limited cgroup is watched");
    assert_eq!((ua.pids.unwrap().current, ua.pids.unwrap().max), (0, 7));
    assert_eq!(
        s.files_open_for(&pa),
        2,
        "pids.current and pids.events kept open"
    );

    // A new cgroup is seen at the next walk, and then read.
    let b = mkcg("b", 9);
    cleanup.dirs.push(b.clone());
    assert!(find(&s.scan(), &pb).is_none(), "not walked yet");
    s.walk();
    let ub = find(&s.scan(), &pb).expect("found by the walk");
    assert_eq!(ub.pids.unwrap().max, 9);
    assert_eq!(s.files_open_for(&pa), 2, "a's files survive the walk");

    // A removed cgroup: its kept descriptors fail (ENODEV), the path
    // no longer opens, and it is dropped at once, without a walk.
    std::fs::remove_dir(&a).unwrap();
    let after = s.scan();
    assert!(find(&after, &pa).is_none(), "{after:?}");
    assert!(find(&after, &pb).is_some());

    // Removed and created again under the same path with a task in
    // it: the stale descriptors are replaced and the new cgroup read.
    std::fs::remove_dir(&b).unwrap();
    let b = mkcg("b", 9);
    let child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = child.id();
    cleanup.child = Some(child);
    std::fs::write(b.join("cgroup.procs"), format!("{pid}\n")).unwrap();
    let ub = find(&s.scan(), &pb).expect("the new b is read through the old path");
    assert_eq!(ub.pids.unwrap().current, 1);
    assert!(s.reopens_for(&pb) >= 1, "the stale descriptor was replaced");
    assert_eq!(s.files_open_for(&pb), 2);
    drop(cleanup);
    assert!(!parent.exists(), "cleaned up");
}
