//! A fake cgroup whose members fork like a fork bomb, to test the
//! freeze/kill policy without root and without risk.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::manager::Version;

#[derive(Debug, Default)]
struct State {
    members: BTreeSet<i32>,
    /// SIGKILLed but not yet exited.
    doomed: BTreeSet<i32>,
    frozen: bool,
    next_pid: i32,
    listings: usize,
}

/// Every time the cgroup is listed while thawed, each live member forks
/// once (up to `pids_max`) and doomed members exit, except `unkillable`
/// ones (tasks in uninterruptible sleep). Frozen members do nothing; like a
/// v1 freezer, SIGKILL takes effect only after thawing.
#[derive(Debug)]
struct Fake {
    state: Mutex<State>,
    version: Version,
    root: bool,
    has_freezer: bool,
    has_kill: bool,
    pids_max: usize,
    unkillable: BTreeSet<i32>,
    /// Pids outside the member list that the subtree contains (pid 1, us).
    hidden_members: Vec<i32>,
}

impl Fake {
    fn bomb(initial: &[i32]) -> Fake {
        Fake {
            state: Mutex::new(State {
                members: initial.iter().copied().collect(),
                next_pid: 1000,
                ..State::default()
            }),
            version: Version::V1,
            root: false,
            has_freezer: true,
            has_kill: false,
            pids_max: 20,
            unkillable: BTreeSet::new(),
            hidden_members: Vec::new(),
        }
    }

    fn tick(&self, s: &mut State) {
        s.listings += 1;
        if s.frozen {
            return;
        }
        let dying: Vec<i32> = s
            .doomed
            .iter()
            .copied()
            .filter(|p| !self.unkillable.contains(p))
            .collect();
        for p in dying {
            s.doomed.remove(&p);
            s.members.remove(&p);
        }
        let live: Vec<i32> = s
            .members
            .iter()
            .copied()
            .filter(|p| !s.doomed.contains(p))
            .collect();
        for _ in live {
            if s.members.len() < self.pids_max {
                s.next_pid += 1;
                let pid = s.next_pid;
                s.members.insert(pid);
            }
        }
    }
}

impl CgroupManager for Fake {
    fn version(&self) -> Version {
        self.version
    }
    fn describe(&self) -> String {
        "fake /bomb".into()
    }
    fn dirs(&self) -> Vec<PathBuf> {
        vec![PathBuf::from("/fake/bomb")]
    }
    fn is_root(&self) -> bool {
        self.root
    }
    fn supports(&self, controller: Controller) -> bool {
        controller == Controller::Pids
    }
    fn create(&self) -> Result<()> {
        Ok(())
    }
    fn remove(&self) -> Result<()> {
        if self.state.lock().unwrap().members.is_empty() {
            Ok(())
        } else {
            Err(CgroupError::io(
                "rmdir",
                "/fake/bomb",
                std::io::Error::from_raw_os_error(libc::EBUSY),
            ))
        }
    }
    fn procs(&self) -> Result<Vec<i32>> {
        self.procs_recursive()
    }
    fn procs_recursive(&self) -> Result<Vec<i32>> {
        let mut s = self.state.lock().unwrap();
        self.tick(&mut s);
        Ok(s.members.iter().copied().collect())
    }
    fn threads(&self) -> Result<Vec<i32>> {
        self.procs()
    }
    fn procs_files(&self) -> Vec<PathBuf> {
        Vec::new()
    }
    fn add_pid(&self, pid: i32) -> Result<()> {
        self.state.lock().unwrap().members.insert(pid);
        Ok(())
    }
    fn can_freeze(&self) -> bool {
        self.has_freezer
    }
    fn set_frozen(&self, frozen: bool) -> Result<()> {
        self.state.lock().unwrap().frozen = frozen;
        Ok(())
    }
    fn freezer_state(&self) -> Result<FreezerState> {
        let s = self.state.lock().unwrap();
        let stuck = s.members.iter().any(|p| self.unkillable.contains(p));
        Ok(match (s.frozen, stuck) {
            (false, _) => FreezerState::Thawed,
            (true, true) => FreezerState::Freezing,
            (true, false) => FreezerState::Frozen,
        })
    }
    fn can_kill(&self) -> bool {
        self.has_kill
    }
    fn kill(&self) -> Result<()> {
        let mut s = self.state.lock().unwrap();
        let all: Vec<i32> = s.members.iter().copied().collect();
        s.doomed.extend(all);
        // cgroup.kill is atomic against forks: members die without a fork window.
        let dying: Vec<i32> = s
            .doomed
            .iter()
            .copied()
            .filter(|p| !self.unkillable.contains(p))
            .collect();
        for p in dying {
            s.doomed.remove(&p);
            s.members.remove(&p);
        }
        Ok(())
    }
    fn memory(&self) -> Result<Option<MemoryStats>> {
        Ok(None)
    }
    fn pids(&self) -> Result<Option<PidsStats>> {
        let s = self.state.lock().unwrap();
        Ok(Some(PidsStats {
            current: s.members.len() as u64,
            max: Some(self.pids_max as u64),
            refused_forks: None,
        }))
    }
    fn cpu_max(&self) -> Result<Option<CpuMax>> {
        Ok(None)
    }
    fn apply(&self, _limits: &Limits) -> Result<()> {
        Ok(())
    }
    fn contains_in_subtree(&self, pid: i32) -> Result<bool> {
        Ok(self.hidden_members.contains(&pid) || self.state.lock().unwrap().members.contains(&pid))
    }
    fn signal(&self, pid: i32, sig: i32) -> Result<bool> {
        assert_eq!(sig, libc::SIGKILL);
        let mut s = self.state.lock().unwrap();
        if s.members.contains(&pid) {
            s.doomed.insert(pid);
            Ok(true)
        } else {
            Ok(false)
        }
    }
}

fn cgroup(fake: Fake) -> Cgroup {
    Cgroup::from_managers(vec![Box::new(fake)])
}

#[test]
fn freeze_kill_thaw_empties_a_fork_bomb() {
    let cg = cgroup(Fake::bomb(&[100]));
    // Let it grow to the limit first.
    for _ in 0..10 {
        cg.procs().unwrap();
    }
    assert_eq!(cg.pids().unwrap().unwrap().current, 20);
    let report = cg.kill_all_within(Duration::from_secs(5)).unwrap();
    assert!(!report.used_cgroup_kill);
    assert!(report.rounds >= 1);
    assert_eq!(
        report.signalled, 20,
        "frozen bomb: exactly the 20 listed are killed"
    );
    assert!(cg.procs_recursive().unwrap().is_empty());
    assert!(
        !cg.is_frozen().unwrap(),
        "kill_all leaves the cgroup thawed"
    );
    cg.remove().unwrap();
}

#[test]
fn kill_without_freezer_still_converges_under_a_pids_limit() {
    let mut fake = Fake::bomb(&[100, 101]);
    fake.has_freezer = false;
    let cg = cgroup(fake);
    let report = cg.kill_all_within(Duration::from_secs(5)).unwrap();
    assert!(report.signalled >= 2);
    assert!(cg.procs_recursive().unwrap().is_empty());
}

#[test]
fn cgroup_kill_is_used_when_offered() {
    let mut fake = Fake::bomb(&[100, 101, 102]);
    fake.has_kill = true;
    fake.version = Version::V2;
    let cg = cgroup(fake);
    let report = cg.kill_all().unwrap();
    assert!(report.used_cgroup_kill);
    assert_eq!((report.rounds, report.signalled), (0, 0));
    assert!(cg.procs().unwrap().is_empty());
}

#[test]
fn refuses_root_init_and_self() {
    let mut root = Fake::bomb(&[100]);
    root.root = true;
    let err = cgroup(root).kill_all().unwrap_err();
    assert!(matches!(err, CgroupError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("root"), "{err}");

    let mut with_init = Fake::bomb(&[100]);
    with_init.hidden_members = vec![1];
    let cg = cgroup(with_init);
    let err = cg.freeze().unwrap_err();
    assert!(err.to_string().contains("pid 1"), "{err}");
    assert!(
        !cg.is_frozen().unwrap(),
        "refused before touching the freezer"
    );

    let mut with_me = Fake::bomb(&[100]);
    with_me.hidden_members = vec![selfheal_sys::process::getpid()];
    let err = cgroup(with_me).kill_all().unwrap_err();
    assert!(err.to_string().contains("calling process"), "{err}");

    let mut root = Fake::bomb(&[]);
    root.root = true;
    assert!(cgroup(root).remove().is_err());
}

#[test]
fn uninterruptible_tasks_are_reported_not_waited_for_forever() {
    let mut fake = Fake::bomb(&[100]);
    fake.unkillable = [100].into_iter().collect();
    fake.pids_max = 1;
    let cg = cgroup(fake);
    let err = cg.freeze_within(Duration::from_millis(50)).unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::FreezeTimeout {
                state: FreezerState::Freezing,
                ..
            }
        ),
        "{err}"
    );
    cg.thaw().unwrap();
    let err = cg.kill_all_within(Duration::from_millis(600)).unwrap_err();
    match err {
        CgroupError::KillIncomplete { survivors, .. } => assert_eq!(survivors, vec![100]),
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn freeze_settles_and_thaw_resumes() {
    let cg = cgroup(Fake::bomb(&[100]));
    cg.freeze().unwrap();
    assert!(cg.is_frozen().unwrap());
    let before = cg.procs().unwrap();
    assert_eq!(cg.procs().unwrap(), before, "frozen members do not fork");
    cg.thaw().unwrap();
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Thawed);
    assert!(cg.procs().unwrap().len() > before.len());
}

#[test]
fn limits_without_a_controller_fail_up_front() {
    let cg = cgroup(Fake::bomb(&[]));
    let err = cg
        .apply(&Limits {
            memory_max_bytes: Some(1 << 20),
            ..Limits::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("memory controller"), "{err}");
    let err = cg
        .apply(&Limits {
            rt_runtime_us: Some(1000),
            ..Limits::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("real-time"), "{err}");
    cg.apply(&Limits {
        pids_max: Some(5),
        ..Limits::default()
    })
    .unwrap();
}
