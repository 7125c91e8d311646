//! The [`Cgroup`] handle: one cgroup across the hierarchies it spans, and
//! the policies recovery relies on.
//!
//! - **Freeze** settles: the request returns at once in the kernel, so we
//!   poll until every task is frozen (or give up after a timeout).
//! - **Kill** is fork-proof: v2 `cgroup.kill` when offered; otherwise freeze,
//!   SIGKILL every listed pid, thaw, and repeat until nothing is left.
//! - **Safety**: freezing or killing the root cgroup, or one that contains
//!   pid 1 or the caller, is refused. The root would stop or kill every
//!   process on the machine; freezing pid 1 or ourselves leaves nobody to
//!   thaw (the machine or this process hangs for good), and killing pid 1
//!   panics the kernel (or tears down the container).

#[cfg(test)]
mod fake;
#[cfg(test)]
mod layout_tests;

use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::controller::cpu::CpuMax;
use crate::controller::freezer::FreezerState;
use crate::controller::memory::MemoryStats;
use crate::controller::pids::PidsStats;
use crate::controller::Controller;
use crate::controller::Limits;
use crate::error::{CgroupError, Result};
use crate::hierarchy::{ControllerLocation, Hierarchy};
use crate::manager::{CgroupManager, V1Dir, V1Manager, V2Manager, Version};
use crate::proc_cgroup::{read_pid_cgroup, ProcCgroupEntry};

/// v1 controllers worth acting on when opening a process's cgroup.
const ACTION_CONTROLLERS: &[Controller] = &[
    Controller::Pids,
    Controller::Memory,
    Controller::Cpu,
    Controller::Freezer,
    Controller::Cpuset,
];

/// What [`Cgroup::kill_all`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KillReport {
    /// `cgroup.kill` was written (v2, or the unified part of a hybrid).
    pub used_cgroup_kill: bool,
    /// Freeze–kill–thaw rounds run (0 when `cgroup.kill` sufficed).
    pub rounds: u32,
    /// SIGKILLs delivered by those rounds.
    pub signalled: usize,
    /// Time from the call until the cgroup was empty.
    pub elapsed: Duration,
}

/// One cgroup, possibly spanning several hierarchies (e.g. v1 pids, memory
/// and freezer directories plus the unified directory of a hybrid).
#[derive(Debug)]
pub struct Cgroup {
    managers: Vec<Box<dyn CgroupManager>>,
}

impl Cgroup {
    /// Default wait for a freezer to settle.
    pub const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default time [`Cgroup::kill_all`] keeps trying.
    pub const KILL_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default time [`Cgroup::remove`] retries while the kernel tears down.
    pub const REMOVE_TIMEOUT: Duration = Duration::from_secs(2);

    /// Cgroup `rel` (e.g. `/selfheal-sandbox/x`) in every hierarchy that has
    /// one of `controllers`, plus the unified hierarchy whenever one is
    /// mounted (in a hybrid it brings `cgroup.kill` and the v2 freezer).
    /// `freezer` counts as present on v2, where it is built in. Nothing is
    /// created; see [`Cgroup::create`].
    pub fn new(hierarchy: &Hierarchy, rel: &str, controllers: &[Controller]) -> Result<Cgroup> {
        let mut v1 = Vec::new();
        let mut v2 = Vec::new();
        for &c in controllers {
            match hierarchy.controller_location(c) {
                Some(ControllerLocation::V1(_)) => v1.push(c),
                Some(ControllerLocation::V2(_)) => v2.push(c),
                None if c == Controller::Freezer && hierarchy.v2.is_some() => {}
                None => {
                    return Err(CgroupError::NotMounted {
                        what: format!("controller {c}"),
                    })
                }
            }
        }
        let mut managers: Vec<Box<dyn CgroupManager>> = Vec::new();
        if !v1.is_empty() {
            managers.push(Box::new(V1Manager::new(hierarchy, rel, &v1)?));
        }
        if hierarchy.v2.is_some() {
            managers.push(Box::new(V2Manager::new(hierarchy, rel, &v2)?));
        }
        if managers.is_empty() {
            return Err(CgroupError::NotMounted {
                what: "any cgroup hierarchy".into(),
            });
        }
        Ok(Cgroup { managers })
    }

    /// The cgroup process `pid` is in, as `/proc/PID/cgroup` names it: its
    /// unified directory and its v1 pids, memory, cpu, freezer and cpuset
    /// directories. Hierarchies where the process sits at the root are left
    /// out (acting there would act on the whole machine) unless it sits at
    /// the root everywhere; then every operation that could hurt refuses.
    pub fn of_pid(hierarchy: &Hierarchy, pid: i32) -> Result<Cgroup> {
        Cgroup::from_proc_entries(hierarchy, &read_pid_cgroup(pid)?).map_err(|e| match e {
            CgroupError::NotMounted { .. } => CgroupError::NotMounted {
                what: format!("any hierarchy listed in /proc/{pid}/cgroup"),
            },
            other => other,
        })
    }

    /// [`Cgroup::of_pid`] from already-parsed `/proc/PID/cgroup` lines.
    pub fn from_proc_entries(hierarchy: &Hierarchy, entries: &[ProcCgroupEntry]) -> Result<Cgroup> {
        // Each usable line; a directory equal to its mount point is the
        // root as far as we can see (even for a container's bind mount).
        let mut v2_dir = None;
        let mut v1_dirs = Vec::new();
        for e in entries {
            if e.is_v2() {
                if let Some(mount) = &hierarchy.v2 {
                    if let Some(dir) = mount.dir(&e.path) {
                        v2_dir = Some((e.path.clone(), dir == mount.mount_point));
                    }
                }
            } else if let Some(mount) = hierarchy.v1_mount_for(e) {
                let useful = ACTION_CONTROLLERS
                    .iter()
                    .any(|c| c.is_in(&mount.controllers));
                if let (true, Some(dir)) = (useful, V1Dir::new(mount, &e.path)) {
                    v1_dirs.push(dir);
                }
            }
        }
        let v1_is_root = |d: &V1Dir| d.path == d.mount.mount_point;
        let any_non_root = v2_dir.as_ref().is_some_and(|(_, root)| !root)
            || v1_dirs.iter().any(|d| !v1_is_root(d));
        if any_non_root {
            v1_dirs.retain(|d| !v1_is_root(d));
            v2_dir = v2_dir.filter(|(_, root)| !root);
        }
        let mut managers: Vec<Box<dyn CgroupManager>> = Vec::new();
        if !v1_dirs.is_empty() {
            managers.push(Box::new(V1Manager::from_dirs(v1_dirs)));
        }
        if let Some((rel, _)) = v2_dir {
            managers.push(Box::new(V2Manager::new(hierarchy, &rel, &[])?));
        }
        if managers.is_empty() {
            return Err(CgroupError::NotMounted {
                what: "any hierarchy listed in /proc/PID/cgroup".into(),
            });
        }
        Ok(Cgroup { managers })
    }

    /// A cgroup over managers built by the caller (or test fakes).
    pub fn from_managers(managers: Vec<Box<dyn CgroupManager>>) -> Cgroup {
        Cgroup { managers }
    }

    /// The managers, v1 first.
    pub fn managers(&self) -> &[Box<dyn CgroupManager>] {
        &self.managers
    }

    /// Identity for messages and logs.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self.managers.iter().map(|m| m.describe()).collect();
        parts.join(" + ")
    }

    /// Every directory spanned.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.managers.iter().flat_map(|m| m.dirs()).collect()
    }

    /// The `cgroup.procs` files a new process writes `0` to in order to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.managers.iter().flat_map(|m| m.procs_files()).collect()
    }

    /// Creates the directories in every hierarchy (existing ones are kept).
    pub fn create(&self) -> Result<()> {
        self.managers.iter().try_for_each(|m| m.create())
    }

    /// Processes directly in the cgroup, in any of its hierarchies.
    pub fn procs(&self) -> Result<Vec<i32>> {
        self.union(|m| m.procs())
    }

    /// Processes in the cgroup and its descendants, in any hierarchy.
    pub fn procs_recursive(&self) -> Result<Vec<i32>> {
        self.union(|m| m.procs_recursive())
    }

    /// Threads directly in the cgroup.
    pub fn threads(&self) -> Result<Vec<i32>> {
        self.union(|m| m.threads())
    }

    fn union(&self, f: impl Fn(&dyn CgroupManager) -> Result<Vec<i32>>) -> Result<Vec<i32>> {
        let mut ids = Vec::new();
        for m in &self.managers {
            ids.extend(f(m.as_ref())?);
        }
        Ok(crate::manager::sorted_union(ids))
    }

    /// Moves process `pid` into the cgroup in every hierarchy.
    pub fn add_pid(&self, pid: i32) -> Result<()> {
        self.managers.iter().try_for_each(|m| m.add_pid(pid))
    }

    /// Applies `limits`. Fails, before changing anything, when a requested
    /// limit has no controller here.
    pub fn apply(&self, limits: &Limits) -> Result<()> {
        let wanted = [
            (Controller::Pids, limits.pids_max.is_some()),
            (Controller::Memory, limits.memory_max_bytes.is_some()),
            (Controller::Cpu, limits.cpu_max.is_some()),
            (Controller::Cpuset, limits.cpuset_cpus.is_some()),
        ];
        for (controller, needed) in wanted {
            if needed && !self.managers.iter().any(|m| m.supports(controller)) {
                return Err(self.unsupported(
                    "limit",
                    format!("the {controller} controller in this cgroup"),
                ));
            }
        }
        let rt_capable = self
            .managers
            .iter()
            .any(|m| m.version() == Version::V1 && m.supports(Controller::Cpu));
        if limits.rt_runtime_us.is_some() && !rt_capable {
            return Err(self.unsupported(
                "set a real-time budget for",
                "a cgroup v1 cpu controller (v2 has no per-group real-time budget)".into(),
            ));
        }
        self.managers.iter().try_for_each(|m| m.apply(limits))
    }

    fn unsupported(&self, action: &'static str, missing: String) -> CgroupError {
        CgroupError::Unsupported {
            action,
            path: self.describe(),
            missing,
        }
    }

    /// Memory counters from whichever hierarchy has the memory controller.
    pub fn memory(&self) -> Result<Option<MemoryStats>> {
        self.first(|m| m.memory())
    }

    /// Task counters from whichever hierarchy has the pids controller.
    pub fn pids(&self) -> Result<Option<PidsStats>> {
        self.first(|m| m.pids())
    }

    /// CFS bandwidth from whichever hierarchy has the cpu controller.
    pub fn cpu_max(&self) -> Result<Option<CpuMax>> {
        self.first(|m| m.cpu_max())
    }

    fn first<T>(&self, f: impl Fn(&dyn CgroupManager) -> Result<Option<T>>) -> Result<Option<T>> {
        for m in &self.managers {
            if let Some(v) = f(m.as_ref())? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// Fails with [`CgroupError::Refused`] when freezing or killing this
    /// cgroup would hit the whole machine, pid 1 or the caller (see the
    /// module docs). [`Cgroup::freeze`] and [`Cgroup::kill_all`] run it
    /// first; recovery code can ask before choosing an action.
    pub fn check_safe_to_act(&self) -> Result<()> {
        self.guard("act on")
    }

    fn guard(&self, action: &'static str) -> Result<()> {
        let refuse = |reason: &str| CgroupError::Refused {
            action,
            path: self.describe(),
            reason: reason.to_string(),
        };
        if self.managers.iter().any(|m| m.is_root()) {
            return Err(refuse(
                "it is the root of its hierarchy, which holds every process on the machine",
            ));
        }
        let me = selfheal_sys::process::getpid();
        for m in &self.managers {
            if m.contains_in_subtree(1)? {
                return Err(refuse(
                    "pid 1 (init) is inside it; stopping init hangs or panics the system",
                ));
            }
            if m.contains_in_subtree(me)? {
                return Err(refuse(
                    "the calling process is inside it; nobody would be left to thaw or finish",
                ));
            }
        }
        Ok(())
    }

    /// The manager whose freezer we use: v2 when offered (it reports
    /// completion precisely), else the v1 freezer.
    fn freezer(&self) -> Option<&dyn CgroupManager> {
        let can = |v| {
            self.managers
                .iter()
                .find(|m| m.version() == v && m.can_freeze())
                .map(|m| m.as_ref())
        };
        can(Version::V2).or_else(|| can(Version::V1))
    }

    fn require_freezer(&self) -> Result<&dyn CgroupManager> {
        self.freezer().ok_or_else(|| {
            self.unsupported(
                "freeze",
                "a freezer (v1: mount the freezer controller; v2: Linux 5.2+, not the root)".into(),
            )
        })
    }

    /// Freezes every task (and descendant cgroup), waiting up to
    /// [`Cgroup::FREEZE_TIMEOUT`] for all of them to stop.
    pub fn freeze(&self) -> Result<()> {
        self.freeze_within(Cgroup::FREEZE_TIMEOUT)
    }

    /// [`Cgroup::freeze`] with another timeout. On timeout the cgroup is left
    /// freezing (tasks that did stop stay stopped); call [`Cgroup::thaw`] to undo.
    pub fn freeze_within(&self, timeout: Duration) -> Result<()> {
        self.guard("freeze")?;
        let m = self.require_freezer()?;
        m.set_frozen(true)?;
        wait_freezer(m, FreezerState::Frozen, timeout)
    }

    /// Thaws every freezer this cgroup has (harmless when not frozen) and
    /// waits up to [`Cgroup::FREEZE_TIMEOUT`] for the tasks to run again.
    pub fn thaw(&self) -> Result<()> {
        let mut any = false;
        for m in self.managers.iter().filter(|m| m.can_freeze()) {
            any = true;
            m.set_frozen(false)?;
            wait_freezer(m.as_ref(), FreezerState::Thawed, Cgroup::FREEZE_TIMEOUT)?;
        }
        if any {
            Ok(())
        } else {
            Err(self.unsupported("thaw", "a freezer".into()))
        }
    }

    /// The state of the freezer [`Cgroup::freeze`] uses.
    pub fn freezer_state(&self) -> Result<FreezerState> {
        self.require_freezer()?.freezer_state()
    }

    /// True when every task is frozen.
    pub fn is_frozen(&self) -> Result<bool> {
        Ok(self.freezer_state()? == FreezerState::Frozen)
    }

    /// SIGKILLs every process in the cgroup and its descendants and waits
    /// until none is left, for up to [`Cgroup::KILL_TIMEOUT`]. A fork bomb
    /// cannot escape: see the module docs. The cgroup ends thawed.
    pub fn kill_all(&self) -> Result<KillReport> {
        self.kill_all_within(Cgroup::KILL_TIMEOUT)
    }

    /// [`Cgroup::kill_all`] with another timeout.
    pub fn kill_all_within(&self, timeout: Duration) -> Result<KillReport> {
        self.guard("kill every process in")?;
        let start = Instant::now();
        let deadline = start + timeout;
        let mut report = KillReport::default();
        let done = |mut r: KillReport| {
            r.elapsed = start.elapsed();
            Ok(r)
        };

        let killers: Vec<&dyn CgroupManager> = self
            .managers
            .iter()
            .filter(|m| m.can_kill())
            .map(|m| m.as_ref())
            .collect();
        if !killers.is_empty() {
            for k in &killers {
                match k.kill() {
                    Err(e) if !e.is_gone() => return Err(e),
                    _ => {}
                }
            }
            report.used_cgroup_kill = true;
            // A task frozen by a v1 freezer cannot act on SIGKILL until thawed.
            self.thaw_quietly();
            let half = start + timeout / 2;
            if self.wait_empty(half)? {
                return done(report);
            }
        }

        let freezer = self.freezer();
        let signaller = self.managers.first().map(|m| m.as_ref());
        loop {
            report.rounds += 1;
            if let Some(f) = freezer {
                // Stop forks while we list and kill; a task that will not
                // freeze (uninterruptible sleep) must not stall the round.
                f.set_frozen(true)?;
                let _ = wait_freezer(f, FreezerState::Frozen, Duration::from_millis(250));
            }
            let pids = self.procs_recursive()?;
            if pids.is_empty() {
                self.thaw_quietly();
                return done(report);
            }
            if let Some(s) = signaller {
                for pid in pids {
                    match s.signal(pid, libc::SIGKILL) {
                        Ok(true) => report.signalled += 1,
                        Ok(false) => {}
                        Err(e) => {
                            self.thaw_quietly();
                            return Err(e);
                        }
                    }
                }
            }
            // Killed tasks frozen by a v1 freezer die only once thawed.
            self.thaw_quietly();
            let round_end = (Instant::now() + Duration::from_millis(200)).min(deadline);
            if self.wait_empty(round_end)? {
                return done(report);
            }
            if Instant::now() >= deadline {
                return Err(CgroupError::KillIncomplete {
                    path: self.describe(),
                    survivors: self.procs_recursive()?,
                    waited: start.elapsed(),
                });
            }
        }
    }

    fn thaw_quietly(&self) {
        for m in self.managers.iter().filter(|m| m.can_freeze()) {
            if let Err(e) = m.set_frozen(false) {
                tracing::warn!(cgroup = %m.describe(), error = %e, "thaw failed");
            }
        }
    }

    /// Polls until no process is left or `deadline` passes.
    fn wait_empty(&self, deadline: Instant) -> Result<bool> {
        let mut pause = Duration::from_millis(1);
        loop {
            if self.procs_recursive()?.is_empty() {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }

    /// Removes the cgroup (and any cgroups below it) from every hierarchy,
    /// retrying for up to [`Cgroup::REMOVE_TIMEOUT`] while the kernel
    /// finishes tearing down exited tasks. It must be empty: see
    /// [`Cgroup::kill_all`].
    pub fn remove(&self) -> Result<()> {
        self.remove_within(Cgroup::REMOVE_TIMEOUT)
    }

    /// [`Cgroup::remove`] with another timeout.
    pub fn remove_within(&self, timeout: Duration) -> Result<()> {
        if self.managers.iter().any(|m| m.is_root()) {
            return Err(CgroupError::Refused {
                action: "remove",
                path: self.describe(),
                reason: "it is the root of its hierarchy".into(),
            });
        }
        let deadline = Instant::now() + timeout;
        loop {
            let result = self.managers.iter().try_for_each(|m| m.remove());
            match result {
                Err(e) if e.is_busy() && Instant::now() < deadline => {
                    sleep(Duration::from_millis(10))
                }
                other => return other,
            }
        }
    }
}

/// Polls a freezer until it reaches `want` or `timeout` passes.
fn wait_freezer(m: &dyn CgroupManager, want: FreezerState, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        let state = m.freezer_state()?;
        if state == want {
            return Ok(());
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(CgroupError::FreezeTimeout {
                path: m.describe(),
                state,
                waited,
            });
        }
        sleep(pause.min(timeout - waited));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}
