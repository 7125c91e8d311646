//! A recording fake of [`SystemOps`]: a table of pretend processes and a
//! log of every call, so the ladder and the protection policy are tested
//! without root and without ever signalling a real process.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::ops::{OpsError, ProcInfo, SystemOps};

/// A call the ladder made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `set_normal_policy(tid)`.
    SetNormal(i32),
    /// `signal(pid, sig)`.
    Signal(i32, i32),
    /// `kill_cgroup(pid)`.
    KillCgroup(i32),
    /// `freeze_cgroup(pid)`.
    FreezeCgroup(i32),
    /// `restart_unit(unit)`.
    RestartUnit(String),
    /// `reboot()`.
    Reboot,
}

impl Call {
    /// The process a call addressed, if any.
    pub fn pid(&self) -> Option<i32> {
        match self {
            Call::Signal(p, _) | Call::KillCgroup(p) | Call::FreezeCgroup(p) => Some(*p),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    procs: Vec<ProcInfo>,
    /// pid → threads (tid, real-time).
    threads: HashMap<i32, Vec<(i32, bool)>>,
    stopped: HashSet<i32>,
    frozen: HashSet<String>,
    /// When `parent` is first stopped, `child` appears (a fork just before).
    fork_on_stop: Vec<(i32, ProcInfo)>,
    fork_on_kill: Vec<(i32, ProcInfo)>,
    calls: Vec<Call>,
}

/// The fake system.
#[derive(Debug)]
pub struct FakeSystem {
    own: i32,
    state: Mutex<State>,
    /// Fail `restart_unit` with this message.
    pub restart_error: Option<String>,
}

impl FakeSystem {
    /// A system whose selfheal runs as `own_pid`.
    pub fn new(own_pid: i32) -> FakeSystem {
        FakeSystem {
            own: own_pid,
            state: Mutex::new(State::default()),
            restart_error: None,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a process (single-threaded, not real-time unless `set_threads`).
    pub fn add(&self, p: ProcInfo) {
        let mut s = self.state();
        s.threads
            .entry(p.pid)
            .or_insert_with(|| vec![(p.pid, false)]);
        s.procs.push(p);
    }

    /// Sets the threads of `pid`.
    pub fn set_threads(&self, pid: i32, threads: Vec<(i32, bool)>) {
        self.state().threads.insert(pid, threads);
    }

    /// Makes `child` appear when `parent` is first stopped.
    pub fn fork_on_stop(&self, parent: i32, child: ProcInfo) {
        self.state().fork_on_stop.push((parent, child));
    }

    /// Makes `child` appear when `parent` is killed: a member that forked
    /// as the kill went out and escaped every stop pass.
    pub fn fork_on_kill(&self, parent: i32, child: ProcInfo) {
        self.state().fork_on_kill.push((parent, child));
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// True while `pid` exists.
    pub fn alive(&self, pid: i32) -> bool {
        self.state().procs.iter().any(|p| p.pid == pid)
    }

    /// True when `pid` was stopped and not continued.
    pub fn is_stopped(&self, pid: i32) -> bool {
        self.state().stopped.contains(&pid)
    }

    /// True when a thread of `pid` is still real-time.
    pub fn is_realtime(&self, pid: i32) -> bool {
        self.state()
            .threads
            .get(&pid)
            .is_some_and(|t| t.iter().any(|(_, rt)| *rt))
    }

    /// True when the cgroup `path` was frozen.
    pub fn is_frozen(&self, path: &str) -> bool {
        self.state().frozen.contains(path)
    }

    fn cgroup_of(s: &State, pid: i32) -> Option<String> {
        s.procs
            .iter()
            .find(|p| p.pid == pid)
            .and_then(|p| p.cgroups.first().cloned())
    }
}

impl SystemOps for FakeSystem {
    fn own_pid(&self) -> i32 {
        self.own
    }

    fn process(&self, pid: i32) -> Result<Option<ProcInfo>, OpsError> {
        Ok(self.state().procs.iter().find(|p| p.pid == pid).cloned())
    }

    fn processes(&self) -> Result<Vec<ProcInfo>, OpsError> {
        Ok(self.state().procs.clone())
    }

    fn threads(&self, pid: i32) -> Result<Vec<(i32, bool)>, OpsError> {
        self.state()
            .threads
            .get(&pid)
            .cloned()
            .ok_or(OpsError::Gone)
    }

    fn set_normal_policy(&self, tid: i32) -> Result<(), OpsError> {
        let mut s = self.state();
        s.calls.push(Call::SetNormal(tid));
        for threads in s.threads.values_mut() {
            for t in threads.iter_mut().filter(|t| t.0 == tid) {
                t.1 = false;
            }
        }
        Ok(())
    }

    fn signal(&self, pid: i32, starttime: u64, sig: i32) -> Result<(), OpsError> {
        let mut s = self.state();
        let Some(p) = s.procs.iter().find(|p| p.pid == pid).cloned() else {
            return Err(OpsError::Gone);
        };
        if p.starttime != starttime {
            return Err(OpsError::Gone);
        }
        s.calls.push(Call::Signal(pid, sig));
        match sig {
            libc::SIGKILL => {
                s.procs.retain(|q| q.pid != pid);
                s.stopped.remove(&pid);
                let born: Vec<ProcInfo> = s
                    .fork_on_kill
                    .iter()
                    .filter(|(parent, _)| *parent == pid)
                    .map(|(_, c)| c.clone())
                    .collect();
                s.fork_on_kill.retain(|(parent, _)| *parent != pid);
                for c in born {
                    s.threads.insert(c.pid, vec![(c.pid, false)]);
                    s.procs.push(c);
                }
            }
            libc::SIGSTOP if s.stopped.insert(pid) => {
                let born: Vec<ProcInfo> = s
                    .fork_on_stop
                    .iter()
                    .filter(|(parent, _)| *parent == pid)
                    .map(|(_, c)| c.clone())
                    .collect();
                s.fork_on_stop.retain(|(parent, _)| *parent != pid);
                for c in born {
                    s.threads.insert(c.pid, vec![(c.pid, false)]);
                    s.procs.push(c);
                }
            }
            libc::SIGCONT => {
                s.stopped.remove(&pid);
            }
            _ => {}
        }
        Ok(())
    }

    fn cgroup_members(&self, pid: i32) -> Result<Vec<i32>, OpsError> {
        let s = self.state();
        let cg = FakeSystem::cgroup_of(&s, pid).ok_or(OpsError::Gone)?;
        let mut v: Vec<i32> = s
            .procs
            .iter()
            .filter(|p| p.cgroups.first() == Some(&cg))
            .map(|p| p.pid)
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    fn kill_cgroup(&self, pid: i32) -> Result<(), OpsError> {
        let mut s = self.state();
        let cg = FakeSystem::cgroup_of(&s, pid).ok_or(OpsError::Gone)?;
        s.calls.push(Call::KillCgroup(pid));
        s.procs.retain(|p| p.cgroups.first() != Some(&cg));
        Ok(())
    }

    fn freeze_cgroup(&self, pid: i32) -> Result<(), OpsError> {
        let mut s = self.state();
        let cg = FakeSystem::cgroup_of(&s, pid).ok_or(OpsError::Gone)?;
        s.calls.push(Call::FreezeCgroup(pid));
        s.frozen.insert(cg);
        Ok(())
    }

    fn restart_unit(&self, unit: &str) -> Result<(), OpsError> {
        self.state().calls.push(Call::RestartUnit(unit.to_string()));
        match &self.restart_error {
            Some(e) => Err(OpsError::Failed(e.clone())),
            None => Ok(()),
        }
    }

    fn reboot(&self) -> Result<(), OpsError> {
        self.state().calls.push(Call::Reboot);
        Ok(())
    }
}

/// A call made through [`Recording`], with what the target looked like
/// just before (so a test can prove it was inside its sandbox).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedCall {
    /// The call.
    pub call: Call,
    /// The target process as it was, when the call addressed one.
    pub target: Option<ProcInfo>,
}

/// Wraps real operations and records every call that changes something,
/// with the target's identity and cgroups looked up first.
#[derive(Debug)]
pub struct Recording<T> {
    inner: T,
    calls: Mutex<Vec<RecordedCall>>,
}

impl<T: SystemOps> Recording<T> {
    /// Records calls made through `inner`.
    pub fn new(inner: T) -> Recording<T> {
        Recording {
            inner,
            calls: Mutex::new(Vec::new()),
        }
    }

    /// Every state-changing call so far.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn log(&self, call: Call, pid: Option<i32>) {
        let target = pid.and_then(|p| self.inner.process(p).ok().flatten());
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(RecordedCall { call, target });
    }
}

impl<T: SystemOps> SystemOps for Recording<T> {
    fn own_pid(&self) -> i32 {
        self.inner.own_pid()
    }
    fn process(&self, pid: i32) -> Result<Option<ProcInfo>, OpsError> {
        self.inner.process(pid)
    }
    fn processes(&self) -> Result<Vec<ProcInfo>, OpsError> {
        self.inner.processes()
    }
    fn threads(&self, pid: i32) -> Result<Vec<(i32, bool)>, OpsError> {
        self.inner.threads(pid)
    }
    fn set_normal_policy(&self, tid: i32) -> Result<(), OpsError> {
        self.log(Call::SetNormal(tid), Some(tid));
        self.inner.set_normal_policy(tid)
    }
    fn signal(&self, pid: i32, starttime: u64, sig: i32) -> Result<(), OpsError> {
        self.log(Call::Signal(pid, sig), Some(pid));
        self.inner.signal(pid, starttime, sig)
    }
    fn cgroup_members(&self, pid: i32) -> Result<Vec<i32>, OpsError> {
        self.inner.cgroup_members(pid)
    }
    fn kill_cgroup(&self, pid: i32) -> Result<(), OpsError> {
        self.log(Call::KillCgroup(pid), Some(pid));
        self.inner.kill_cgroup(pid)
    }
    fn freeze_cgroup(&self, pid: i32) -> Result<(), OpsError> {
        self.log(Call::FreezeCgroup(pid), Some(pid));
        self.inner.freeze_cgroup(pid)
    }
    fn restart_unit(&self, unit: &str) -> Result<(), OpsError> {
        self.log(Call::RestartUnit(unit.to_string()), None);
        self.inner.restart_unit(unit)
    }
    fn reboot(&self) -> Result<(), OpsError> {
        self.log(Call::Reboot, None);
        self.inner.reboot()
    }
}
