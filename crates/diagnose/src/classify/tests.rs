//! Diagnosis of snapshots recorded while real faults ran (see
//! `tests/fixtures/README.md`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;
use crate::cgroups::{CgroupRoots, CgroupScanner};
use crate::snapshot::SnapshotReader;
use crate::sweep::DStateTracker;

mod blocked;
mod cpu;
mod forkbomb;
mod memory;

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
    let diagnoses = dx.diagnose(&obs);
    for d in &diagnoses {
        reads_back(d, &trigger);
    }
    Run { diagnoses }
}

/// A diagnosis of a recorded fault, printed as its event is stored and
/// served, reads back as the evidence it was.
fn reads_back(d: &Diagnosis, trigger: &Trigger) {
    let text = serde_json::to_string(&d.to_event(trigger, None)).unwrap();
    let event: selfheal_event::Event = serde_json::from_str(&text).unwrap();
    let stored = crate::StoredDiagnosis::from_event(&event)
        .unwrap_or_else(|e| panic!("{}: {e}\n{text}", d.class));
    assert_eq!(stored.class, d.class);
    assert_eq!(stored.evidence, d.evidence, "{text}");
}

#[test]
fn legitimate_load_is_dismissed() {
    let fx = Fixture::load("busy");
    let trigger = Trigger::Alert {
        rule: "run_queue_long".into(),
        level: selfheal_config::Level::Light,
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
    assert!(d.evidence.to_value()["busiest"].as_array().unwrap().len() >= 3);
    let ev = d.to_event(&Trigger::Manual, None);
    assert_eq!(ev.kind.as_str(), "dismissed");
    assert_eq!(ev.details["class"], "legitimate_load");
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
