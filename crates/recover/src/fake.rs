//! A recording fake of [`SystemOps`]: a table of pretend processes and a
//! log of every call, so the ladder and the protection policy are tested
//! without root and without ever signalling a real process.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::ops::{ForkHold, OpsError, Pinned, ProcInfo, SystemOps};

/// A call the ladder made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `set_normal_policy(tid)`.
    SetNormal(i32),
    /// `deprioritize_thread(tid, cpu)`.
    Deprioritize(i32, Option<u32>),
    /// `signal(pid, sig)`.
    Signal(i32, i32),
    /// `kill_cgroup(pid, path)`.
    KillCgroup(i32, String),
    /// `freeze_cgroup(pid, path)`.
    FreezeCgroup(i32, String),
    /// `restart_unit(unit)`.
    RestartUnit(String),
    /// `quarantine_cgroup(pid, from)`.
    Quarantine(i32, String),
    /// `move_to_cgroup(pid, to)`.
    MoveTo(i32, String),
    /// `kill_quarantine(path)`.
    KillQuarantine(String),
    /// `remove_quarantine(path)`.
    RemoveQuarantine(String),
    /// `sync_filesystems()`.
    Sync,
    /// `restart(method)`.
    Restart(selfheal_config::RestartMethod),
    /// The kernel's emergency restart.
    EmergencyRestart,
    /// `abort_fuse(connection)`.
    AbortFuse(u64),
    /// `hold_forks(pid, path, machine)`.
    HoldForks(i32, String, bool),
    /// `release_forks(hold)`.
    ReleaseForks(ForkHold),
}

impl Call {
    /// The process a call addressed, if any.
    pub fn pid(&self) -> Option<i32> {
        match self {
            Call::Signal(p, _)
            | Call::KillCgroup(p, _)
            | Call::FreezeCgroup(p, _)
            | Call::MoveTo(p, _) => Some(*p),
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
    /// When stopped `parent` takes the stop (its state is first read after
    /// the stop), `child` appears: a fork in flight that completed after
    /// its children were first listed.
    fork_on_settle: Vec<(i32, ProcInfo)>,
    /// FUSE connection → (mount ids, waiting requests).
    fuse: HashMap<u64, (Vec<u32>, u64)>,
    calls: Vec<Call>,
    /// Looks at a hearing CPU's interrupt count so far.
    interrupt_looks: u64,
}

/// The fake system.
#[derive(Debug)]
pub struct FakeSystem {
    own: i32,
    state: Mutex<State>,
    /// Fail `restart_unit` with this message.
    pub restart_error: Option<String>,
    /// `restart` by these methods fails (the others "restart": the call is
    /// recorded and returns, as no real restart would).
    pub failing_restarts: Vec<selfheal_config::RestartMethod>,
    /// What `kexec_loaded` answers.
    pub kexec_loaded: bool,
    /// `children` lists children (a kernel with CONFIG_PROC_CHILDREN);
    /// false: it answers `None`.
    pub lists_children: bool,
    /// (pid, signal) pairs the "kernel" refuses with EPERM.
    pub refused_signals: Vec<(i32, i32)>,
    /// `hold_forks` fails with this message.
    pub hold_error: Option<String>,

    /// CPUs whose interrupt count stands still (interrupts off); the
    /// others' grows at every look.
    pub deaf_cpus: Vec<u32>,
}

impl FakeSystem {
    /// A system whose selfheal runs as `own_pid`.
    pub fn new(own_pid: i32) -> FakeSystem {
        FakeSystem {
            own: own_pid,
            state: Mutex::new(State::default()),
            restart_error: None,
            failing_restarts: Vec::new(),
            kexec_loaded: false,
            lists_children: true,
            refused_signals: Vec::new(),
            hold_error: None,
            deaf_cpus: Vec::new(),
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

    /// Makes `child` appear once stopped `parent` has taken the stop: a
    /// fork in flight when it was stopped, completed after its children
    /// were first read (the kernel does not restart it).
    pub fn fork_on_settle(&self, parent: i32, child: ProcInfo) {
        self.state().fork_on_settle.push((parent, child));
    }

    /// Makes `child` appear when `parent` is killed: a member that forked
    /// as the kill went out and escaped every stop pass.
    pub fn fork_on_kill(&self, parent: i32, child: ProcInfo) {
        self.state().fork_on_kill.push((parent, child));
    }

    /// Adds a FUSE connection serving `mount_id` with `waiting` requests.
    pub fn add_fuse(&self, connection: u64, mount_id: u32, waiting: u64) {
        self.state()
            .fuse
            .insert(connection, (vec![mount_id], waiting));
    }

    /// True when FUSE connection `connection` was aborted.
    pub fn fuse_aborted(&self, connection: u64) -> bool {
        self.state().calls.contains(&Call::AbortFuse(connection))
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

    /// The process `p` pins, when it is still there; and whether it sits
    /// in cgroup `path` (the fake has one hierarchy: `cgroups[0]`, with
    /// members below it counted in).
    fn pinned_in(s: &State, p: &Pinned, path: &str) -> Result<(), OpsError> {
        let proc = s
            .procs
            .iter()
            .find(|q| q.pid == p.pid() && q.starttime == p.starttime())
            .ok_or(OpsError::Gone)?;
        let at = proc.cgroups.first().map(String::as_str).unwrap_or("");
        if at != path && !crate::ops::in_quarantine_beneath(at, path) {
            return Err(OpsError::NotInCgroup(path.to_string()));
        }
        Ok(())
    }

    fn within(p: &ProcInfo, path: &str) -> bool {
        p.cgroups
            .first()
            .is_some_and(|c| crate::policy::is_within(c, path))
    }

    /// Sets the state letter of `pid` (`Z` for a zombie).
    pub fn set_state(&self, pid: i32, state: char) {
        for p in self.state().procs.iter_mut().filter(|p| p.pid == pid) {
            p.state = state;
        }
    }

    /// Moves `pid` to cgroup `path`.
    pub fn set_cgroup(&self, pid: i32, path: &str) {
        for p in self.state().procs.iter_mut().filter(|p| p.pid == pid) {
            p.cgroups = vec![path.to_string()];
        }
    }

    /// Replaces the command of `pid` (as an exec would).
    pub fn exec(&self, pid: i32, comm: &str) {
        for p in self.state().procs.iter_mut().filter(|p| p.pid == pid) {
            p.comm = comm.to_string();
        }
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

    fn deprioritize_thread(&self, tid: i32, cpu: Option<u32>) -> Result<String, OpsError> {
        let mut s = self.state();
        if !s.procs.iter().any(|p| p.pid == tid) {
            return Err(OpsError::Gone);
        }
        s.calls.push(Call::Deprioritize(tid, cpu));
        Ok("SCHED_IDLE (fake)".into())
    }

    fn state_of(&self, pid: i32, starttime: u64) -> Option<char> {
        let mut s = self.state();
        let p = s
            .procs
            .iter()
            .find(|p| p.pid == pid && p.starttime == starttime)?
            .clone();
        if !s.stopped.contains(&pid) {
            return Some(p.state);
        }
        let born: Vec<ProcInfo> = s
            .fork_on_settle
            .iter()
            .filter(|(parent, _)| *parent == pid)
            .map(|(_, c)| c.clone())
            .collect();
        s.fork_on_settle.retain(|(parent, _)| *parent != pid);
        for c in born {
            s.threads.insert(c.pid, vec![(c.pid, false)]);
            s.procs.push(c);
        }
        Some('T')
    }

    fn children(&self, pid: i32) -> Result<Option<Vec<i32>>, OpsError> {
        if !self.lists_children {
            return Ok(None);
        }
        let s = self.state();
        if !s.procs.iter().any(|p| p.pid == pid) {
            return Err(OpsError::Gone);
        }
        let mut v: Vec<i32> = s
            .procs
            .iter()
            .filter(|p| p.ppid == pid)
            .map(|p| p.pid)
            .collect();
        v.sort_unstable();
        Ok(Some(v))
    }

    fn pin(&self, pid: i32, starttime: u64) -> Result<Pinned, OpsError> {
        let s = self.state();
        match s.procs.iter().find(|p| p.pid == pid) {
            Some(p) if p.starttime == starttime => Ok(Pinned::unchecked(pid, starttime)),
            _ => Err(OpsError::Gone),
        }
    }

    fn signal_pinned(&self, p: &Pinned, sig: i32) -> Result<(), OpsError> {
        self.signal(p.pid(), p.starttime(), sig)
    }

    fn signal(&self, pid: i32, starttime: u64, sig: i32) -> Result<(), OpsError> {
        let mut s = self.state();
        let Some(p) = s.procs.iter().find(|p| p.pid == pid).cloned() else {
            return Err(OpsError::Gone);
        };
        if p.starttime != starttime {
            return Err(OpsError::Gone);
        }
        if sig == 0 {
            return Ok(());
        }
        if self.refused_signals.contains(&(pid, sig)) {
            return Err(OpsError::Permission(format!("signal {sig} to {pid}")));
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

    fn cgroup_members(&self, p: &Pinned, path: &str) -> Result<Vec<i32>, OpsError> {
        let s = self.state();
        FakeSystem::pinned_in(&s, p, path)?;
        let mut v: Vec<i32> = s
            .procs
            .iter()
            .filter(|q| FakeSystem::within(q, path))
            .map(|q| q.pid)
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    fn kill_cgroup(&self, p: &Pinned, path: &str) -> Result<(), OpsError> {
        let mut s = self.state();
        FakeSystem::pinned_in(&s, p, path)?;
        s.calls.push(Call::KillCgroup(p.pid(), path.to_string()));
        s.procs.retain(|q| !FakeSystem::within(q, path));
        Ok(())
    }

    fn freeze_cgroup(&self, p: &Pinned, path: &str) -> Result<(), OpsError> {
        let mut s = self.state();
        FakeSystem::pinned_in(&s, p, path)?;
        s.calls.push(Call::FreezeCgroup(p.pid(), path.to_string()));
        s.frozen.insert(path.to_string());
        Ok(())
    }

    fn quarantine_cgroup(&self, p: &Pinned, from: &str) -> Result<String, OpsError> {
        let mut s = self.state();
        FakeSystem::pinned_in(&s, p, from)?;
        s.calls.push(Call::Quarantine(p.pid(), from.to_string()));
        Ok(crate::ops::quarantine_path(from, p.pid()))
    }

    fn move_to_cgroup(
        &self,
        pid: i32,
        starttime: u64,
        to: &str,
        _back: &str,
    ) -> Result<(), OpsError> {
        let mut s = self.state();
        let proc = s
            .procs
            .iter_mut()
            .find(|q| q.pid == pid && q.starttime == starttime)
            .ok_or(OpsError::Gone)?;
        proc.cgroups = vec![to.to_string()];
        s.calls.push(Call::MoveTo(pid, to.to_string()));
        // A fork in flight as it moves completes (outside, where the
        // parent was): the step must find that child too.
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
        Ok(())
    }

    fn remove_quarantine(&self, path: &str) {
        self.state()
            .calls
            .push(Call::RemoveQuarantine(path.to_string()));
    }

    fn kill_quarantine(&self, path: &str, _remove: bool) -> Result<(), OpsError> {
        let mut s = self.state();
        s.calls.push(Call::KillQuarantine(path.to_string()));
        s.procs.retain(|q| !FakeSystem::within(q, path));
        Ok(())
    }

    /// A cgroup other than the root has a `pids.max` ("max" before); the
    /// root has none, and the machine's limit is 100000. A hold is placed
    /// at the floor (0, `MIN_THREADS_MAX`) but does not stop the forks the
    /// fake injects: they model forks already past the kernel's check when
    /// the limit was lowered.
    fn hold_forks(
        &self,
        p: &Pinned,
        path: &str,
        machine: bool,
    ) -> Result<Option<ForkHold>, OpsError> {
        let mut s = self.state();
        if path != "/" {
            FakeSystem::pinned_in(&s, p, path)?;
        }
        s.calls
            .push(Call::HoldForks(p.pid(), path.to_string(), machine));
        if let Some(e) = &self.hold_error {
            return Err(OpsError::Failed(e.clone()));
        }
        if path != "/" {
            return Ok(Some(ForkHold::Cgroup {
                dir: std::path::PathBuf::from(format!("/fake/cgroup{path}")),
                previous: "max".into(),
                held_at: 0,
            }));
        }
        Ok(machine.then_some(ForkHold::Machine {
            previous: 100_000,
            held_at: crate::ops::MIN_THREADS_MAX,
        }))
    }

    fn release_forks(&self, hold: &ForkHold) -> Result<(), OpsError> {
        self.state().calls.push(Call::ReleaseForks(hold.clone()));
        Ok(())
    }

    fn restart_unit(&self, unit: &str) -> Result<(), OpsError> {
        self.state().calls.push(Call::RestartUnit(unit.to_string()));
        match &self.restart_error {
            Some(e) => Err(OpsError::Failed(e.clone())),
            None => Ok(()),
        }
    }

    fn sync_filesystems(&self, _timeout: std::time::Duration) -> bool {
        self.state().calls.push(Call::Sync);
        true
    }

    fn kexec_loaded(&self) -> bool {
        self.kexec_loaded
    }

    fn cpu_interrupts(&self, cpu: u32) -> Option<u64> {
        if self.deaf_cpus.contains(&cpu) {
            return Some(1000);
        }
        let mut st = self.state();
        st.interrupt_looks += 1;
        Some(1000 + st.interrupt_looks)
    }

    fn emergency_restart(&self) -> Result<(), OpsError> {
        self.state().calls.push(Call::EmergencyRestart);
        Ok(())
    }

    fn restart(&self, method: selfheal_config::RestartMethod) -> Result<(), OpsError> {
        self.state().calls.push(Call::Restart(method));
        if self.failing_restarts.contains(&method) {
            return Err(OpsError::Permission(format!(
                "{} refused (fake)",
                method.as_str()
            )));
        }
        Ok(())
    }

    fn fuse_connection(&self, connection: u64) -> Result<crate::ops::FuseConnection, OpsError> {
        Ok(match self.state().fuse.get(&connection) {
            Some((mounts, waiting)) => crate::ops::FuseConnection {
                mount_ids: mounts.clone(),
                waiting: Some(*waiting),
            },
            None => crate::ops::FuseConnection::default(),
        })
    }

    fn abort_fuse(&self, connection: u64) -> Result<(), OpsError> {
        let mut s = self.state();
        s.calls.push(Call::AbortFuse(connection));
        match s.fuse.get_mut(&connection) {
            Some(c) => {
                c.1 = 0;
                Ok(())
            }
            None => Err(OpsError::Gone),
        }
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
    fn processes_light(
        &self,
        uid_of: Option<&str>,
        cgroups: bool,
    ) -> Result<Vec<ProcInfo>, OpsError> {
        self.inner.processes_light(uid_of, cgroups)
    }
    fn pids(&self) -> Result<Vec<i32>, OpsError> {
        self.inner.pids()
    }
    fn children_hint(&self, pid: i32, one_thread: bool) -> Result<Option<Vec<i32>>, OpsError> {
        self.inner.children_hint(pid, one_thread)
    }
    fn state_of(&self, pid: i32, starttime: u64) -> Option<char> {
        self.inner.state_of(pid, starttime)
    }
    fn pin_child(
        &self,
        parent: i32,
        pid: i32,
        cgroups: bool,
    ) -> Result<Option<(Pinned, ProcInfo, bool)>, OpsError> {
        self.inner.pin_child(parent, pid, cgroups)
    }
    fn threads(&self, pid: i32) -> Result<Vec<(i32, bool)>, OpsError> {
        self.inner.threads(pid)
    }
    fn set_normal_policy(&self, tid: i32) -> Result<(), OpsError> {
        self.log(Call::SetNormal(tid), Some(tid));
        self.inner.set_normal_policy(tid)
    }
    fn deprioritize_thread(&self, tid: i32, cpu: Option<u32>) -> Result<String, OpsError> {
        self.log(Call::Deprioritize(tid, cpu), Some(tid));
        self.inner.deprioritize_thread(tid, cpu)
    }
    fn children(&self, pid: i32) -> Result<Option<Vec<i32>>, OpsError> {
        self.inner.children(pid)
    }
    fn pin(&self, pid: i32, starttime: u64) -> Result<Pinned, OpsError> {
        self.inner.pin(pid, starttime)
    }
    fn signal_pinned(&self, p: &Pinned, sig: i32) -> Result<(), OpsError> {
        if sig != 0 {
            self.log(Call::Signal(p.pid(), sig), Some(p.pid()));
        }
        self.inner.signal_pinned(p, sig)
    }
    fn signal(&self, pid: i32, starttime: u64, sig: i32) -> Result<(), OpsError> {
        if sig != 0 {
            self.log(Call::Signal(pid, sig), Some(pid));
        }
        self.inner.signal(pid, starttime, sig)
    }
    fn cgroup_members(&self, p: &Pinned, path: &str) -> Result<Vec<i32>, OpsError> {
        self.inner.cgroup_members(p, path)
    }
    fn kill_cgroup(&self, p: &Pinned, path: &str) -> Result<(), OpsError> {
        self.log(Call::KillCgroup(p.pid(), path.to_string()), Some(p.pid()));
        self.inner.kill_cgroup(p, path)
    }
    fn freeze_cgroup(&self, p: &Pinned, path: &str) -> Result<(), OpsError> {
        self.log(Call::FreezeCgroup(p.pid(), path.to_string()), Some(p.pid()));
        self.inner.freeze_cgroup(p, path)
    }
    fn quarantine_cgroup(&self, p: &Pinned, from: &str) -> Result<String, OpsError> {
        self.log(Call::Quarantine(p.pid(), from.to_string()), Some(p.pid()));
        self.inner.quarantine_cgroup(p, from)
    }
    fn move_to_cgroup(
        &self,
        pid: i32,
        starttime: u64,
        to: &str,
        back: &str,
    ) -> Result<(), OpsError> {
        self.log(Call::MoveTo(pid, to.to_string()), Some(pid));
        self.inner.move_to_cgroup(pid, starttime, to, back)
    }
    fn remove_quarantine(&self, path: &str) {
        self.log(Call::RemoveQuarantine(path.to_string()), None);
        self.inner.remove_quarantine(path)
    }
    fn kill_quarantine(&self, path: &str, remove: bool) -> Result<(), OpsError> {
        self.log(Call::KillQuarantine(path.to_string()), None);
        self.inner.kill_quarantine(path, remove)
    }
    fn hold_forks(
        &self,
        p: &Pinned,
        path: &str,
        machine: bool,
    ) -> Result<Option<ForkHold>, OpsError> {
        self.log(
            Call::HoldForks(p.pid(), path.to_string(), machine),
            Some(p.pid()),
        );
        self.inner.hold_forks(p, path, machine)
    }
    fn release_forks(&self, hold: &ForkHold) -> Result<(), OpsError> {
        self.log(Call::ReleaseForks(hold.clone()), None);
        self.inner.release_forks(hold)
    }
    fn restart_unit(&self, unit: &str) -> Result<(), OpsError> {
        self.log(Call::RestartUnit(unit.to_string()), None);
        self.inner.restart_unit(unit)
    }
    fn sync_filesystems(&self, timeout: std::time::Duration) -> bool {
        self.log(Call::Sync, None);
        self.inner.sync_filesystems(timeout)
    }
    fn kexec_loaded(&self) -> bool {
        self.inner.kexec_loaded()
    }
    fn restart(&self, method: selfheal_config::RestartMethod) -> Result<(), OpsError> {
        self.log(Call::Restart(method), None);
        self.inner.restart(method)
    }
    fn cpu_interrupts(&self, cpu: u32) -> Option<u64> {
        self.inner.cpu_interrupts(cpu)
    }
    fn emergency_restart(&self) -> Result<(), OpsError> {
        self.log(Call::EmergencyRestart, None);
        self.inner.emergency_restart()
    }
    fn fuse_connection(&self, connection: u64) -> Result<crate::ops::FuseConnection, OpsError> {
        self.inner.fuse_connection(connection)
    }
    fn abort_fuse(&self, connection: u64) -> Result<(), OpsError> {
        self.log(Call::AbortFuse(connection), None);
        self.inner.abort_fuse(connection)
    }
}
