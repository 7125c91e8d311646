//! Diagnosis of snapshots recorded while real faults ran (see
//! `tests/fixtures/README.md`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;
use crate::cgroups::{CgroupRoots, CgroupScanner};
use crate::snapshot::SnapshotReader;
use crate::sweep::DStateTracker;

struct Fixture {
    dir: tempfile::TempDir,
    meta: serde_json::Value,
}

impl Fixture {
    fn load(case: &str) -> Fixture {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(case);
        let dir = tempfile::tempdir().unwrap();
        for t in ["t0", "t1"] {
            unpack(
                &std::fs::read(src.join(format!("{t}.txt"))).unwrap(),
                &dir.path().join(t),
            );
        }
        let meta =
            serde_json::from_str(&std::fs::read_to_string(src.join("meta.json")).unwrap()).unwrap();
        Fixture { dir, meta }
    }

    fn root(&self, t: &str) -> PathBuf {
        self.dir.path().join(t)
    }

    fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.meta["interval_ms"].as_f64().unwrap() / 1000.0)
    }

    fn cgroup(&self) -> String {
        self.meta["cgroup"].as_str().unwrap().to_string()
    }

    /// Both snapshots, `interval` apart.
    fn snapshots(&self) -> (Snapshot, Snapshot) {
        let base = Instant::now();
        let mut a = SnapshotReader::new(&self.root("t0").join("proc"))
            .take()
            .unwrap();
        let mut b = SnapshotReader::new(&self.root("t1").join("proc"))
            .take()
            .unwrap();
        a.taken_at = base;
        b.taken_at = base + self.interval();
        (a, b)
    }

    fn scanner(&self) -> CgroupScanner {
        let cg = self.root("t1").join("cgroup");
        CgroupScanner::new(
            CgroupRoots {
                memory: Some((cg.join("memory"), false)),
                pids: Some((cg.join("pids"), false)),
                unified: Some(cg.join("unified")),
            },
            Duration::from_secs(60),
        )
    }

    fn diagnoser(&self, thresholds: Thresholds) -> Diagnoser {
        let mut d = Diagnoser::new(thresholds, &self.root("t1").join("proc"));
        d.own_pids.clear();
        d
    }

    /// The pid of the first process named `comm` in the second snapshot.
    fn pid_of(&self, snap: &Snapshot, comm: &str) -> i32 {
        snap.processes()
            .into_iter()
            .find(|t| t.stat.comm == comm)
            .unwrap_or_else(|| panic!("{comm} not in the fixture"))
            .pid
    }
}

/// Unpacks a snapshot archive (`@@@ path len` + bytes) under `to`.
fn unpack(archive: &[u8], to: &Path) {
    let mut i = 0;
    while i < archive.len() {
        let nl = archive[i..].iter().position(|b| *b == b'\n').unwrap() + i;
        let header = std::str::from_utf8(&archive[i..nl]).unwrap();
        let rest = header.strip_prefix("@@@ ").expect("archive header");
        let (path, len) = rest.rsplit_once(' ').unwrap();
        let len: usize = len.parse().unwrap();
        let body = &archive[nl + 1..nl + 1 + len];
        let dest = to.join(path);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::write(dest, body).unwrap();
        i = nl + 1 + len + 1;
    }
}

struct Run {
    diagnoses: Vec<Diagnosis>,
}

impl Run {
    fn classes(&self) -> Vec<Class> {
        self.diagnoses.iter().map(|d| d.class).collect()
    }

    fn only(&self, class: Class) -> &Diagnosis {
        let found: Vec<&Diagnosis> = self.diagnoses.iter().filter(|d| d.class == class).collect();
        assert_eq!(
            found.len(),
            1,
            "expected one {class}, got {:?}",
            self.classes()
        );
        found[0]
    }
}

fn run(
    fx: &Fixture,
    trigger: Trigger,
    stalled: &[(u32, Duration)],
    stuck: &[crate::sweep::StuckTask],
    thresholds: Thresholds,
) -> Run {
    run_with(fx, trigger, stalled, stuck, thresholds, |_, _| {})
}

/// [`run`], with the snapshots edited first.
fn run_with(
    fx: &Fixture,
    trigger: Trigger,
    stalled: &[(u32, Duration)],
    stuck: &[crate::sweep::StuckTask],
    thresholds: Thresholds,
    edit: impl FnOnce(&mut Snapshot, &mut Snapshot),
) -> Run {
    run_full(
        fx,
        trigger,
        stalled,
        stuck,
        thresholds,
        edit,
        &HashSet::new(),
        &[],
    )
}

#[allow(clippy::too_many_arguments)]
fn run_full(
    fx: &Fixture,
    trigger: Trigger,
    stalled: &[(u32, Duration)],
    stuck: &[crate::sweep::StuckTask],
    thresholds: Thresholds,
    edit: impl FnOnce(&mut Snapshot, &mut Snapshot),
    settling: &HashSet<(i32, u64)>,
    oom_loops: &[crate::oomloop::OomLoop],
) -> Run {
    let (mut before, mut after) = fx.snapshots();
    edit(&mut before, &mut after);
    let mut scanner = fx.scanner();
    let cgroups = scanner.scan();
    let members: HashMap<String, Vec<i32>> = cgroups
        .iter()
        .map(|c| (c.path.clone(), scanner.members(&c.path)))
        .collect();
    let dx = fx.diagnoser(thresholds);
    let obs = Observation {
        trigger: &trigger,
        before: &before,
        after: &after,
        stalled_cpus: stalled,
        stuck,
        cgroups: &cgroups,
        cgroup_members: &members,
        kernel: &[],
        settling,
        oom_loops,
    };
    Run {
        diagnoses: dx.diagnose(&obs),
    }
}

#[test]
fn rt_hog_named_with_and_without_a_stall_report() {
    let fx = Fixture::load("rt_hog");
    let (_, after) = fx.snapshots();
    let hog = fx.pid_of(&after, "tp-rt-spin");
    for stalled in [vec![(1, Duration::from_millis(400))], vec![]] {
        let trigger = match stalled.first() {
            Some(&(cpu, d)) => Trigger::Stall {
                cpu,
                stalled_for: d,
            },
            None => Trigger::Alert {
                rule: "run_queue_long".into(),
                level: "light".into(),
                cpu: None,
            },
        };
        let r = run(&fx, trigger, &stalled, &[], Thresholds::default());
        assert_eq!(r.classes(), vec![Class::RtHog], "{:#?}", r.diagnoses);
        let d = r.only(Class::RtHog);
        assert_eq!(d.culprit.pid, Some(hog));
        assert_eq!(d.culprit.comm.as_deref(), Some("tp-rt-spin"));
        assert_eq!(d.culprit.cpu, Some(1));
        assert_eq!(d.culprit.cgroup.as_deref(), Some(fx.cgroup().as_str()));
        assert_eq!(d.evidence["culprit"]["policy"], "SCHED_FIFO");
        assert_eq!(d.evidence["culprit"]["rt_priority"], 20);
        assert!(d.evidence["culprit"]["cpu_percent"].as_f64().unwrap() >= 80.0);
        let t = d.target.as_ref().unwrap();
        assert_eq!((t.pid, &t.blame), (hog, &crate::class::Blame::Tree));
        assert!(t.starttime > 0);
        assert!(matches!(d.symptom, Symptom::RtMonopoly { pid, .. } if pid == hog));
        let ev = d.to_event(&Trigger::Manual, Some(Duration::from_millis(230)));
        assert_eq!(ev.details["class"], "rt_hog");
        assert_eq!(ev.kind.as_str(), "diagnosis");
    }
}

#[test]
fn stalled_cpu_without_a_realtime_runner_is_a_kernel_stall() {
    // The busy fixture: nothing real-time. If the stall detector says CPU 0
    // stalled, only a kernel stall can explain it.
    let fx = Fixture::load("busy");
    let r = run(
        &fx,
        Trigger::Stall {
            cpu: 0,
            stalled_for: Duration::from_millis(300),
        },
        &[(0, Duration::from_millis(300))],
        &[],
        Thresholds::default(),
    );
    let d = r.only(Class::KernelStall);
    assert_eq!(d.culprit.cpu, Some(0));
    assert_eq!(d.symptom, Symptom::CpuStalled { cpu: 0 });
    assert!(d.summary.contains("cpu 0"), "{}", d.summary);
}

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
    let stack = d.evidence["kernel_stack"].as_array().unwrap();
    assert!(stack
        .iter()
        .any(|l| l.as_str().unwrap().contains("filemap_read")));
    assert!(d.evidence["stalled_devices"].as_array().unwrap().is_empty());
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
    let b = &d.evidence["blocker"];
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

#[test]
fn fork_bomb_at_its_pids_limit() {
    let fx = Fixture::load("fork_bomb");
    let r = run(
        &fx,
        Trigger::Cgroup {
            path: fx.cgroup(),
            resource: "pids".into(),
        },
        &[],
        &[],
        Thresholds::default(),
    );
    assert_eq!(r.classes(), vec![Class::ForkBomb], "{:#?}", r.diagnoses);
    let d = r.only(Class::ForkBomb);
    assert_eq!(d.culprit.cgroup.as_deref(), Some(fx.cgroup().as_str()));
    assert_eq!(d.culprit.comm.as_deref(), Some("bash"));
    assert_eq!(d.evidence["pids_max"], 32);
    assert_eq!(d.evidence["pids_current"], 32);
    assert!(d.evidence["forks_refused_recently"].as_u64().unwrap() > 0);
    assert!(matches!(d.symptom, Symptom::CgroupTasks { below: 16, .. }));
    // Recovery may take the whole cgroup down: the diagnosis blames all of it.
    assert_eq!(
        d.target.as_ref().unwrap().blame,
        crate::class::Blame::Cgroup
    );
}

#[test]
fn cpu_stalls_during_a_fork_bomb_are_its_symptoms() {
    let fx = Fixture::load("fork_bomb");
    let stalled = [(1, Duration::from_millis(400))];
    let trigger = Trigger::Stall {
        cpu: 1,
        stalled_for: Duration::from_millis(400),
    };
    let r = run(&fx, trigger, &stalled, &[], Thresholds::default());
    // Whatever the CPU classifier made of the stall, the fork bomb is the
    // diagnosis, first, and no kernel_stall is left to act on one member.
    assert_eq!(r.diagnoses[0].class, Class::ForkBomb, "{:#?}", r.diagnoses);
    assert!(r.diagnoses.iter().all(|d| d.class != Class::KernelStall));

    let stall = Diagnosis {
        class: Class::KernelStall,
        culprit: selfheal_event::Culprit {
            cpu: Some(1),
            comm: Some("bash".into()),
            ..Default::default()
        },
        target: None,
        summary: "kernel_stall: cpu 1".into(),
        evidence: json!({}),
        blocker: None,
        symptom: Symptom::CpuStalled { cpu: 1 },
        no_target: None,
        restart_veto: None,
    };
    let mut out = vec![stall.clone(), r.diagnoses[0].clone()];
    absorb_stalls_into_fork_bomb(&mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].class, Class::ForkBomb);
    assert_eq!(out[0].evidence["cpu_stalls"][0]["cpu"], 1);
    assert_eq!(
        out[0].evidence["cpu_stalls"][0]["summary"],
        "kernel_stall: cpu 1"
    );
    // Without a fork bomb a stall stays a stall.
    let mut out = vec![stall];
    absorb_stalls_into_fork_bomb(&mut out);
    assert_eq!(out[0].class, Class::KernelStall);
}

#[test]
fn memory_hog_in_a_nearly_full_sandbox() {
    let fx = Fixture::load("mem_hog");
    let (_, after) = fx.snapshots();
    let hog = fx.pid_of(&after, "tp-memhog");
    // The sandbox was at 87.5% (anon) when recorded.
    let at = |percent: f64| Thresholds {
        cgroup_memory_percent: percent,
        ..Thresholds::default()
    };
    let trigger = || Trigger::Cgroup {
        path: fx.cgroup(),
        resource: "memory".into(),
    };
    let r = run(&fx, trigger(), &[], &[], at(85.0));
    assert_eq!(
        r.classes(),
        vec![Class::MemoryExhaustion],
        "{:#?}",
        r.diagnoses
    );
    let d = r.only(Class::MemoryExhaustion);
    assert_eq!(d.culprit.pid, Some(hog));
    assert_eq!(d.culprit.cgroup.as_deref(), Some(fx.cgroup().as_str()));
    assert_eq!(d.evidence["scope"], "cgroup");
    assert_eq!(d.evidence["limit_bytes"], 256u64 << 20);
    assert!(
        d.evidence["largest"][0]["rss_growth_bytes"]
            .as_i64()
            .unwrap()
            > 0
    );
    // Below the default 90% bound it is not yet exhaustion.
    let r = run(&fx, trigger(), &[], &[], Thresholds::default());
    assert_eq!(r.classes(), vec![Class::LegitimateLoad]);
}

#[test]
fn memory_falling_fast_is_exhaustion_before_the_level_is_reached() {
    // The mem_hog fixture (tp-memhog growing ~4 MiB between the snapshots)
    // on a 128 MiB machine whose available memory fell from 12 to 8 MiB
    // (6.25%): above the 5% level, gone in ~0.2 s at that rate (the lab's
    // mem_hog, where the kernel's OOM killer acted 180 ms after a
    // level-only dismissal).
    let fx = Fixture::load("mem_hog");
    let (_, after) = fx.snapshots();
    let hog = fx.pid_of(&after, "tp-memhog");
    let interval = fx.interval().as_secs_f64();
    let trigger = || Trigger::Alert {
        rule: "memory_low".into(),
        level: "light".into(),
        cpu: None,
    };
    let squeeze = |before_mib: u64, after_mib: u64| {
        move |b: &mut Snapshot, a: &mut Snapshot| {
            for s in [&mut *b, &mut *a] {
                s.system.mem.total_bytes = 128 << 20;
                s.system.psi_memory = None;
            }
            b.system.mem.available_bytes = Some(before_mib << 20);
            a.system.mem.available_bytes = Some(after_mib << 20);
        }
    };
    let th = Thresholds::default;
    // Diagnoses the squeezed snapshots and checks the one class found.
    let diagnosed = |t: Thresholds, edit, class: Class| {
        let r = run_with(&fx, trigger(), &[], &[], t, edit);
        assert_eq!(r.classes(), vec![class], "{:#?}", r.diagnoses);
        r
    };
    let r = diagnosed(th(), squeeze(12, 8), Class::MemoryExhaustion);
    let d = r.only(Class::MemoryExhaustion);
    assert_eq!(d.culprit.pid, Some(hog), "{}", d.summary);
    assert_eq!(d.evidence["scope"], "machine");
    assert_eq!(d.evidence["trend"], true);
    let eta = d.evidence["seconds_to_exhaustion"].as_f64().unwrap();
    let expect = 8.0 * interval / 4.0;
    assert!(
        (eta - expect).abs() < 0.06,
        "eta {eta} s, expected {expect}"
    );
    assert!(d.summary.contains("gone in"), "{}", d.summary);
    // Cleared only back above twice the level.
    assert_eq!(
        d.symptom,
        Symptom::MachineMemory {
            available_percent: 10.0
        }
    );
    // The same level, steady: not exhaustion (a machine that simply uses
    // its memory).
    diagnosed(th(), squeeze(8, 8), Class::LegitimateLoad);
    // Falling as fast, but with plenty left: not yet.
    diagnosed(th(), squeeze(40, 36), Class::LegitimateLoad);
    // Memory vanishing far faster than any process grows (a kernel leak,
    // the lab's kmem_leak): still exhaustion, but no process is blamed, so
    // recovery only records instead of killing the largest bystander.
    let r = diagnosed(th(), squeeze(60, 8), Class::MemoryExhaustion);
    let d = r.only(Class::MemoryExhaustion);
    assert_eq!(d.culprit.pid, None, "{}", d.summary);
    assert!(d.target.is_none());
    assert!(
        d.summary.contains("no process accounts for it"),
        "{}",
        d.summary
    );
    assert_eq!(d.evidence["available_lost_bytes"], 52u64 << 20);
    // The trend test off.
    let off = Thresholds {
        mem_exhaustion_horizon: Duration::ZERO,
        ..th()
    };
    diagnosed(off, squeeze(12, 8), Class::LegitimateLoad);
}

#[test]
fn legitimate_load_is_dismissed() {
    let fx = Fixture::load("busy");
    let trigger = Trigger::Alert {
        rule: "run_queue_long".into(),
        level: "light".into(),
        cpu: None,
    };
    let r = run(&fx, trigger, &[], &[], Thresholds::default());
    assert_eq!(
        r.classes(),
        vec![Class::LegitimateLoad],
        "{:#?}",
        r.diagnoses
    );
    let d = &r.diagnoses[0];
    assert!(d.target.is_none());
    assert!(d.evidence["busiest"].as_array().unwrap().len() >= 3);
    let ev = d.to_event(&Trigger::Manual, None);
    assert_eq!(ev.kind.as_str(), "dismissed");
    assert_eq!(ev.details["class"], "legitimate_load");
}

/// The busy fixture with kernel thread `comm` edited to run `run_ms` and
/// wait `wait_ms` of the interval on CPU 1, runnable in both snapshots.
fn spinning_kthread(comm: &str, run_ms: u64, wait_ms: u64) -> (Fixture, Run, i32) {
    spinning_task(comm, run_ms, wait_ms, true)
}

/// [`spinning_kthread`], or with `kernel = false` the same thread made a
/// user-space one (its PF_KTHREAD flag cleared): a user-space CPU hog.
fn spinning_task(comm: &str, run_ms: u64, wait_ms: u64, kernel: bool) -> (Fixture, Run, i32) {
    let fx = Fixture::load("busy");
    let (_, after) = fx.snapshots();
    let k = after
        .tasks
        .iter()
        .find(|t| t.is_kernel_thread() && t.sched.is_some())
        .expect("a kernel thread with schedstat in the busy fixture")
        .tid;
    let name = comm.to_string();
    let r = run_with(
        &fx,
        Trigger::Alert {
            rule: "kernel_spin".into(),
            level: "light".into(),
            cpu: Some(1),
        },
        &[],
        &[],
        Thresholds::default(),
        |before, after| {
            let base = before
                .tasks
                .iter()
                .find(|t| t.tid == k)
                .unwrap()
                .sched
                .unwrap();
            for (snap, extra) in [(before, 0u64), (after, 1u64)] {
                // CPU 1 is the thread's alone (the fixture's hogs go to 0).
                for t in snap.tasks.iter_mut().filter(|t| t.tid != k) {
                    t.stat.processor = Some(0);
                }
                let t = snap.tasks.iter_mut().find(|t| t.tid == k).unwrap();
                t.stat.state = 'R';
                t.stat.processor = Some(1);
                t.stat.comm = name.clone();
                if !kernel {
                    // PF_KTHREAD
                    t.stat.flags &= !0x0020_0000;
                }
                let mut s = base;
                s.runtime_ns += extra * run_ms * 1_000_000;
                s.wait_ns += extra * wait_ms * 1_000_000;
                t.sched = Some(s);
            }
        },
    );
    (fx, r, k)
}

#[test]
fn a_kernel_thread_that_never_sleeps_is_a_runaway_named_and_targeted() {
    // The hang lab's kthread_loop under preempt=full: the canary runs (no
    // stall), the thread runs most of the interval and waits the rest.
    let interval = Fixture::load("busy").interval().as_millis() as u64;
    let (_, r, k) = spinning_kthread("lab_kthread_loo", interval * 6 / 10, interval * 4 / 10);
    let d = r.only(Class::RunawayKthread);
    assert_eq!(d.culprit.pid, Some(k));
    assert_eq!(d.culprit.comm.as_deref(), Some("lab_kthread_loo"));
    assert_eq!(d.culprit.cpu, Some(1));
    assert_eq!(d.target.as_ref().map(|t| t.pid), Some(k));
    assert!(matches!(d.symptom, Symptom::KthreadSpin { tid, .. } if tid == k));
    assert!(d.summary.contains("without sleeping"), "{}", d.summary);
    // Reclaim, softirqs and the like run long by design: not runaways.
    let (_, r, _) = spinning_kthread("kswapd0", interval, 0);
    assert!(
        !r.classes().contains(&Class::RunawayKthread),
        "{:#?}",
        r.diagnoses
    );
    // A busy kernel thread that also slept (runnable 60% of the interval),
    // and one that ran a third of it.
    let (_, r, _) = spinning_kthread("lab_kthread_loo", interval * 6 / 10, 0);
    assert!(
        !r.classes().contains(&Class::RunawayKthread),
        "{:#?}",
        r.diagnoses
    );
    let (_, r, _) = spinning_kthread("kworker/1:2", interval / 3, interval * 2 / 3);
    assert!(
        !r.classes().contains(&Class::RunawayKthread),
        "{:#?}",
        r.diagnoses
    );
}

#[test]
fn a_user_space_cpu_hog_is_never_a_runaway_kernel_thread() {
    // Bystander: the very numbers of the runaway above (never slept, ran
    // the whole interval), but a user-space program: not a kernel thread,
    // so never this class (and never the one step that acts on kernel
    // threads).
    let interval = Fixture::load("busy").interval().as_millis() as u64;
    for (run, wait) in [(interval, 0), (interval * 6 / 10, interval * 4 / 10)] {
        let (_, r, _) = spinning_task("spin", run, wait, false);
        assert!(
            !r.classes().contains(&Class::RunawayKthread),
            "{:#?}",
            r.diagnoses
        );
    }
}

#[test]
fn no_fixture_shows_another_class() {
    // Each recorded fault is diagnosed as itself only, even when every
    // check runs (no stall reported, no stuck tasks).
    for (case, expected) in [
        ("rt_hog", Class::RtHog),
        ("fork_bomb", Class::ForkBomb),
        ("busy", Class::LegitimateLoad),
        ("d_state", Class::LegitimateLoad),
    ] {
        let fx = Fixture::load(case);
        let r = run(&fx, Trigger::Manual, &[], &[], Thresholds::default());
        assert_eq!(r.classes(), vec![expected], "{case}: {:#?}", r.diagnoses);
    }
}

/// The recorded bomb: `bash` processes of process group 2027 under a pids
/// limit, next to nine other `bash` processes of the same uid (login
/// shells, one of them the shell that started the bomb, in its session).
fn bomb_members(s: &Snapshot) -> HashSet<(i32, u64)> {
    s.processes()
        .into_iter()
        .filter(|t| t.stat.comm == "bash" && t.stat.pgrp == 2027)
        .map(|t| (t.pid, t.stat.starttime_ticks))
        .collect()
}

fn pids_trigger(fx: &Fixture) -> Trigger {
    Trigger::Cgroup {
        path: fx.cgroup(),
        resource: "pids".into(),
    }
}

#[test]
fn the_aftermath_of_a_killed_bomb_is_not_a_new_bomb() {
    let fx = Fixture::load("fork_bomb");
    let (_, after) = fx.snapshots();
    let members = bomb_members(&after);
    assert_eq!(members.len(), 32);
    let low = Thresholds {
        fork_bomb_tasks: 8,
        ..Thresholds::default()
    };
    // Acted upon moments ago: still listed (stopped, dying) but not counted.
    let r = run_full(
        &fx,
        pids_trigger(&fx),
        &[],
        &[],
        low.clone(),
        |_, _| {},
        &members,
        &[],
    );
    assert_eq!(
        r.classes(),
        vec![Class::LegitimateLoad],
        "{:#?}",
        r.diagnoses
    );
    // Zombies not yet reaped: not counted either, settle window or not.
    let r = run_with(&fx, pids_trigger(&fx), &[], &[], low, |b, a| {
        for s in [b, a] {
            for t in s.tasks.iter_mut().filter(|t| t.stat.pgrp == 2027) {
                t.stat.state = 'Z';
            }
        }
    });
    assert_eq!(
        r.classes(),
        vec![Class::LegitimateLoad],
        "{:#?}",
        r.diagnoses
    );
}

#[test]
fn a_program_bomb_blames_its_related_group_not_the_oldest_namesake() {
    let fx = Fixture::load("fork_bomb");
    // No pids limit in play: the program-wide test must find it, growing.
    let t = Thresholds {
        fork_bomb_tasks: 20,
        cgroup_pids_percent: 1000.0,
        ..Thresholds::default()
    };
    let r = run_with(&fx, Trigger::Manual, &[], &[], t, |before, _| {
        before.tasks.retain(|t| t.pid < 2110);
    });
    let d = r.only(Class::ForkBomb);
    let target = d.target.as_ref().unwrap();
    // The oldest bash on the machine is pid 1033; the bomb's oldest is 2091.
    assert_eq!(target.pid, 2091, "{}", d.summary);
    let crate::class::Blame::Program(scope) = &target.blame else {
        panic!("{:?}", target.blame)
    };
    assert_eq!(scope.pgids, [2027].into());
    assert_eq!(scope.members.len(), 32);
    assert!(matches!(&d.symptom, Symptom::TreeTasks { target: t, .. } if t == target));
    // What recovery would blame among the recorded processes: the bomb only.
    let (_, after) = fx.snapshots();
    let procs: Vec<selfheal_recover::ProcInfo> = after
        .processes()
        .into_iter()
        .map(|t| selfheal_recover::ProcInfo {
            pid: t.pid,
            ppid: t.stat.ppid,
            comm: t.stat.comm.clone(),
            starttime: t.stat.starttime_ticks,
            uid: t.uid,
            kernel_thread: t.is_kernel_thread(),
            cgroups: vec![],
            unit: None,
            pgid: t.stat.pgrp,
            sid: t.stat.session,
            state: t.stat.state,
        })
        .collect();
    let blamed: HashSet<(i32, u64)> = selfheal_recover::blamed_set(&procs, target, &[])
        .iter()
        .map(|p| (p.pid, p.starttime))
        .collect();
    assert_eq!(blamed, bomb_members(&after));
}

/// The fixture's bomb held at its limit, both snapshots alike (no growth),
/// with the cgroup test off (as when the count is below
/// `cgroup_pids_percent` at the moment of every sweep): found through the
/// forks its cgroup refused. Beside it, the same steady group whose cgroup
/// refused nothing (a large pool of workers) is left alone.
#[test]
fn a_bomb_held_at_a_pids_limit_is_found_without_growth_a_steady_pool_is_not() {
    let fx = Fixture::load("fork_bomb");
    let t = Thresholds {
        fork_bomb_tasks: 20,
        cgroup_pids_percent: 1000.0,
        ..Thresholds::default()
    };
    let same = |before: &mut Snapshot, after: &mut Snapshot| *before = after.clone();
    let r = run_with(&fx, Trigger::Manual, &[], &[], t.clone(), same);
    let d = r.only(Class::ForkBomb);
    assert_eq!(d.evidence["scope"], "program", "{}", d.summary);
    assert_eq!(d.evidence["processes"], d.evidence["processes_before"]);
    assert_eq!(d.evidence["held_by_pids_limit"], fx.cgroup().as_str());
    assert!(d.evidence["forks_refused_recently"].as_u64().unwrap() > 0);
    assert!(
        d.summary.contains("not growing: held at the pids limit"),
        "{}",
        d.summary
    );
    let target = d.target.as_ref().unwrap();
    let crate::class::Blame::Program(scope) = &target.blame else {
        panic!("{:?}", target.blame)
    };
    assert_eq!(scope.pgids, [2027].into());

    // The bystander: nothing refused.
    let events = fx
        .root("t1")
        .join(format!("cgroup/pids{}/pids.events", fx.cgroup()));
    std::fs::write(&events, "max 0\n").unwrap();
    let r = run_with(&fx, Trigger::Manual, &[], &[], t, same);
    assert!(
        !r.classes().contains(&Class::ForkBomb),
        "{:#?}",
        r.diagnoses
    );
}

#[test]
fn a_memory_cgroup_in_a_fill_and_kill_loop_is_recorded_with_program_and_parent() {
    let fx = Fixture::load("mem_hog");
    let (_, after) = fx.snapshots();
    let hog = fx.pid_of(&after, "tp-memhog");
    let parent = after
        .processes()
        .into_iter()
        .find(|t| t.pid == hog)
        .unwrap()
        .stat
        .ppid;
    let now = Instant::now();
    let kills: Vec<crate::oomloop::OomKill> = (0..5)
        .map(|i| crate::oomloop::OomKill {
            pid: Some(9000 + i),
            comm: Some("tp-memhog".into()),
            task_cgroup: Some(fx.cgroup()),
            at: now,
        })
        .collect();
    let lp = crate::oomloop::OomLoop {
        cgroup: fx.cgroup(),
        kills,
        window: Duration::from_secs(30),
    };
    // With the cgroup also at its limit now: one diagnosis, the loop.
    let t = Thresholds {
        cgroup_memory_percent: 85.0,
        ..Thresholds::default()
    };
    let trigger = Trigger::Kernel {
        verdict: "oom_kill".into(),
        cpu: None,
    };
    let r = run_full(
        &fx,
        trigger,
        &[],
        &[],
        t,
        |_, _| {},
        &HashSet::new(),
        std::slice::from_ref(&lp),
    );
    let d = r.only(Class::MemoryExhaustion);
    assert_eq!(d.evidence["scope"], "cgroup_oom_loop", "{:#?}", r.diagnoses);
    assert_eq!(d.evidence["program"], "tp-memhog");
    assert_eq!(d.evidence["oom_kills"], 5);
    assert_eq!(d.evidence["current"]["pid"], hog);
    assert_eq!(d.evidence["respawner"]["pid"], parent);
    assert_eq!(d.evidence["respawner"]["inside_cgroup"], false);
    assert_eq!(d.evidence["limit_diagnoses"].as_array().unwrap().len(), 1);
    assert_eq!(d.culprit.cgroup.as_deref(), Some(fx.cgroup().as_str()));
    // Recorded only, and it says why.
    assert!(d.target.is_none());
    let why = d.no_target.as_deref().unwrap();
    assert!(
        why.contains("record only") && why.contains("outside the cgroup"),
        "{why}"
    );
    assert!(d.summary.contains("fill-and-kill") && d.summary.contains("5 times"));
    let ev = d.to_event(&Trigger::Manual, None);
    assert!(ev.details["record_only"].is_string());
}
