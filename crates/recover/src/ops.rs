//! The system calls recovery makes, behind one trait (youki style): the
//! ladder and the policy only ever go through [`SystemOps`], so tests run
//! them against [`crate::fake::FakeSystem`], which records every call.

use std::os::fd::OwnedFd;
use std::time::Duration;

use selfheal_config::RestartMethod;

mod fork_hold;
mod linux;
pub use fork_hold::{fork_hold_note, restore_stale_fork_holds, FORK_HOLD_DIR, MIN_THREADS_MAX};
pub use linux::{read_proc_info, LinuxOps, WatchdogControl};

/// What recovery needs to know about a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    /// Process id.
    pub pid: i32,
    /// Parent pid.
    pub ppid: i32,
    /// Command name.
    pub comm: String,
    /// Start time, ticks after boot: with the pid, the process's identity.
    pub starttime: u64,
    /// Real uid.
    pub uid: Option<u32>,
    /// A kernel thread.
    pub kernel_thread: bool,
    /// Every cgroup path of the process that is not a hierarchy root.
    pub cgroups: Vec<String>,
    /// Its systemd unit, if any.
    pub unit: Option<String>,
    /// Process group.
    pub pgid: i32,
    /// Session.
    pub sid: i32,
    /// One-letter state (R, S, D, T, Z, …).
    pub state: char,
}

/// A process pinned for acting on: on Linux a pidfd opened *before* its
/// start time was checked, so every action through it reaches that
/// process or fails (a pid reused meanwhile can never be hit).
#[derive(Debug)]
pub struct Pinned {
    pid: i32,
    starttime: u64,
    fd: Option<OwnedFd>,
}

impl Pinned {
    /// A handle without a pidfd, for fakes that check identity themselves.
    pub fn unchecked(pid: i32, starttime: u64) -> Pinned {
        Pinned {
            pid,
            starttime,
            fd: None,
        }
    }

    /// The pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The start time it was pinned with.
    pub fn starttime(&self) -> u64 {
        self.starttime
    }
}

/// A FUSE connection as the system shows it now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FuseConnection {
    /// Ids of the mounts it serves (empty: unmounted).
    pub mount_ids: Vec<u32>,
    /// Requests waiting on it (`None` when fusectl cannot be read).
    pub waiting: Option<u64>,
}

/// A limit on new tasks placed while a fork bomb's step runs
/// ([`SystemOps::hold_forks`]), lifted by [`SystemOps::release_forks`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForkHold {
    /// `pids.max` of the bomb's own cgroup (the directory in the pids
    /// hierarchy), lowered from `previous` (`max` or a number, as read) to
    /// `held_at` (0: nothing there can fork).
    Cgroup {
        /// The cgroup directory holding `pids.max`.
        dir: std::path::PathBuf,
        /// The value read before, written back on release.
        previous: String,
        /// The limit placed.
        held_at: u64,
    },
    /// `kernel.threads-max`, lowered from `previous` to `held_at` (the
    /// floor, [`MIN_THREADS_MAX`]: nothing on a machine running
    /// more tasks than that can fork): for a bomb in the root cgroup,
    /// which has no `pids.max`. The kernel's own comment on this check:
    /// "only there to stop root fork bombs".
    Machine {
        /// The value read before, written back on release.
        previous: u64,
        /// The limit placed.
        held_at: u64,
    },
}

impl ForkHold {
    /// True when the limit placed lets no new task start where it applies
    /// (`pids.max` 0; `threads-max` at the floor, below the
    /// tasks any running machine has): the processes it covers can no
    /// longer fork, so none needs stopping before it is killed.
    pub fn blocks_every_fork(&self) -> bool {
        match self {
            ForkHold::Cgroup { held_at, .. } => *held_at == 0,
            ForkHold::Machine { held_at, .. } => *held_at <= MIN_THREADS_MAX,
        }
    }
}

impl std::fmt::Display for ForkHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForkHold::Cgroup {
                dir,
                previous,
                held_at,
            } => write!(f, "{}/pids.max {previous} -> {held_at}", dir.display()),
            ForkHold::Machine { previous, held_at } => {
                write!(f, "kernel.threads-max {previous} -> {held_at}")
            }
        }
    }
}

/// A system call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpsError {
    /// The process is gone (or its pid now names another process).
    #[error("the process is gone")]
    Gone,
    /// Not permitted.
    #[error("not permitted: {0}")]
    Permission(String),
    /// The operation refused itself (e.g. a cgroup holding init).
    #[error("refused: {0}")]
    Refused(String),
    /// The process is not (or no longer) in the cgroup named.
    #[error("the process is not in cgroup {0}")]
    NotInCgroup(String),
    /// Anything else.
    #[error("{0}")]
    Failed(String),
}

impl OpsError {
    fn from_sys(e: selfheal_sys::SysError) -> OpsError {
        if e.is_gone() {
            OpsError::Gone
        } else if e.is_permission() {
            OpsError::Permission(e.to_string())
        } else {
            OpsError::Failed(e.to_string())
        }
    }

    fn from_cgroup(e: selfheal_cgroup::CgroupError) -> OpsError {
        use selfheal_cgroup::CgroupError;
        if e.is_gone() {
            OpsError::Gone
        } else if e.is_permission() {
            OpsError::Permission(e.to_string())
        } else if matches!(e, CgroupError::Refused { .. }) {
            OpsError::Refused(e.to_string())
        } else {
            OpsError::Failed(e.to_string())
        }
    }
}

/// Every system call recovery makes.
pub trait SystemOps: Send + Sync {
    /// The pid of selfheal itself.
    fn own_pid(&self) -> i32;
    /// A process, or `None` when it does not exist.
    fn process(&self, pid: i32) -> Result<Option<ProcInfo>, OpsError>;
    /// Every process.
    fn processes(&self) -> Result<Vec<ProcInfo>, OpsError>;
    /// The pids of every process (a directory listing, nothing read).
    fn pids(&self) -> Result<Vec<i32>, OpsError> {
        Ok(self.processes()?.into_iter().map(|p| p.pid).collect())
    }
    /// Every process, read as lightly as the caller allows: its `uid`
    /// only when it runs `uid_of` (the command a program blame names;
    /// `None` otherwise), its cgroups and unit only with `cgroups` (empty
    /// otherwise). A listing of thousands of processes while a fork bomb
    /// waits costs a third of a full one.
    fn processes_light(
        &self,
        uid_of: Option<&str>,
        cgroups: bool,
    ) -> Result<Vec<ProcInfo>, OpsError> {
        let _ = (uid_of, cgroups);
        self.processes()
    }
    /// The threads of `pid` and whether each runs under a real-time policy.
    fn threads(&self, pid: i32) -> Result<Vec<(i32, bool)>, OpsError>;
    /// Moves thread `tid` to SCHED_OTHER.
    fn set_normal_policy(&self, tid: i32) -> Result<(), OpsError>;
    /// Moves thread `tid` out of everyone's way: SCHED_IDLE (nice 19 where
    /// that is refused) and, when the kernel lets it move, only `cpu`.
    /// Returns what was done, in words.
    fn deprioritize_thread(&self, tid: i32, cpu: Option<u32>) -> Result<String, OpsError>;
    /// The children of `pid` (every thread's, `/proc/PID/task/TID/children`),
    /// or `None` where the kernel does not list them (CONFIG_PROC_CHILDREN).
    fn children(&self, pid: i32) -> Result<Option<Vec<i32>>, OpsError>;
    /// The children of `pid` when it is known to have `one_thread` only:
    /// then its main thread's list holds them all, one read instead of a
    /// directory listing and a read per thread.
    fn children_hint(&self, pid: i32, one_thread: bool) -> Result<Option<Vec<i32>>, OpsError> {
        let _ = one_thread;
        self.children(pid)
    }
    /// The one-letter state of `pid` if it is still the process that
    /// started at `starttime` (`None` otherwise): `T` once it has taken a
    /// stop.
    fn state_of(&self, pid: i32, starttime: u64) -> Option<char> {
        match self.process(pid) {
            Ok(Some(p)) if p.starttime == starttime => Some(p.state),
            _ => None,
        }
    }
    /// A child met on a walk down a process tree: pins `pid` and reads just
    /// what the walk needs (identity, parent, name, state, process group;
    /// its cgroups only with `cgroups`, its uid never). `Ok(None)` when
    /// `pid` is not (or no longer) a live child of `parent`. The `bool` is
    /// true when it has one thread (see [`SystemOps::children_hint`]).
    fn pin_child(
        &self,
        parent: i32,
        pid: i32,
        cgroups: bool,
    ) -> Result<Option<(Pinned, ProcInfo, bool)>, OpsError> {
        let _ = cgroups;
        let Some(info) = self.process(pid)? else {
            return Ok(None);
        };
        if info.ppid != parent || crate::target::is_dead(&info) {
            return Ok(None);
        }
        match self.pin(pid, info.starttime) {
            Ok(p) => Ok(Some((p, info, false))),
            Err(OpsError::Gone) => Ok(None),
            Err(e) => Err(e),
        }
    }
    /// Pins `pid` if it is still the process that started at `starttime`
    /// (`Err(Gone)` otherwise): what every action on it goes through.
    fn pin(&self, pid: i32, starttime: u64) -> Result<Pinned, OpsError>;
    /// Sends `sig` to the pinned process (`Err(Gone)` once it has exited).
    fn signal_pinned(&self, p: &Pinned, sig: i32) -> Result<(), OpsError>;
    /// Sends `sig` to `pid` if it is still the process that started at
    /// `starttime` (never to a process that reused the pid).
    fn signal(&self, pid: i32, starttime: u64, sig: i32) -> Result<(), OpsError> {
        self.signal_pinned(&self.pin(pid, starttime)?, sig)
    }
    /// Processes in cgroup `path` (and below), in every hierarchy where the
    /// pinned process sits exactly at `path`; `Err(NotInCgroup)` when it
    /// sits there in none.
    fn cgroup_members(&self, p: &Pinned, path: &str) -> Result<Vec<i32>, OpsError>;
    /// Kills every process in cgroup `path`, as [`SystemOps::cgroup_members`] finds it.
    fn kill_cgroup(&self, p: &Pinned, path: &str) -> Result<(), OpsError>;
    /// Freezes cgroup `path`, as [`SystemOps::cgroup_members`] finds it.
    fn freeze_cgroup(&self, p: &Pinned, path: &str) -> Result<(), OpsError>;
    /// Creates cgroup `QUARANTINE-<pid>` beneath `from` (the fork bomb's
    /// cgroup, so every limit above still applies) with `pids.max = 0`,
    /// after checking the pinned process still sits in `from` and lives.
    /// Returns the new cgroup's path.
    fn quarantine_cgroup(&self, p: &Pinned, from: &str) -> Result<String, OpsError>;
    /// Moves `pid` into cgroup `to` if it is still the process that started
    /// at `starttime` (`Err(Gone)` otherwise). Should it die between the
    /// check and the move and its pid go to another process, that one is
    /// moved back to `back` and `Err(Gone)` returned.
    fn move_to_cgroup(
        &self,
        pid: i32,
        starttime: u64,
        to: &str,
        back: &str,
    ) -> Result<(), OpsError>;
    /// Removes quarantine cgroup `path` if it is empty (a refused step
    /// moved its processes back); otherwise leaves it.
    fn remove_quarantine(&self, path: &str);
    /// Kills every process in quarantine cgroup `path`, and with `remove`
    /// waits for them to go and removes the cgroup.
    fn kill_quarantine(&self, path: &str, remove: bool) -> Result<(), OpsError>;
    /// Stops a fork bomb growing while its step runs: lowers `pids.max` of
    /// cgroup `path` (where the pinned process must sit) to 0; where that
    /// cgroup has no `pids.max` (the root) and `machine` is set, lowers
    /// `kernel.threads-max` to the floor ([`MIN_THREADS_MAX`], 20).
    /// `Ok(None)` when no hold applies or a lower limit is already there.
    /// What it changes is noted where a restarted daemon finds it
    /// ([`restore_stale_fork_holds`]).
    fn hold_forks(
        &self,
        p: &Pinned,
        path: &str,
        machine: bool,
    ) -> Result<Option<ForkHold>, OpsError>;
    /// Puts back what [`SystemOps::hold_forks`] lowered.
    fn release_forks(&self, hold: &ForkHold) -> Result<(), OpsError>;
    /// `systemctl restart UNIT`.
    fn restart_unit(&self, unit: &str) -> Result<(), OpsError>;
    /// FUSE connection `connection`: its mounts and waiting requests.
    fn fuse_connection(&self, connection: u64) -> Result<FuseConnection, OpsError>;
    /// Aborts FUSE connection `connection` (`…/connections/N/abort`).
    fn abort_fuse(&self, connection: u64) -> Result<(), OpsError>;
    /// Flushes every filesystem (`sync(2)`), giving up after `timeout`
    /// (a stalled device can block it forever); true when it finished.
    fn sync_filesystems(&self, timeout: Duration) -> bool;
    /// True when a kernel is loaded for kexec.
    fn kexec_loaded(&self) -> bool;
    /// Restarts the machine by `method` now. Returns only when that failed
    /// (on a real machine, success never returns).
    fn restart(&self, method: RestartMethod) -> Result<(), OpsError>;
    /// The maskable interrupts CPU `cpu` has taken so far (/proc/interrupts);
    /// `None` when unknown. A CPU whose count stands still while it is busy
    /// has interrupts off.
    fn cpu_interrupts(&self, cpu: u32) -> Option<u64>;
    /// The kernel's emergency restart (no reboot notifiers, no device
    /// shutdown), for a machine where a CPU takes no interrupts. Under the
    /// same locks as [`SystemOps::restart`].
    fn emergency_restart(&self) -> Result<(), OpsError>;
}

/// A shared handle acts like what it points to (a test keeps an `Arc` of
/// the fake it hands to the ladder).
impl<T: SystemOps + ?Sized> SystemOps for std::sync::Arc<T> {
    fn own_pid(&self) -> i32 {
        (**self).own_pid()
    }
    fn process(&self, pid: i32) -> Result<Option<ProcInfo>, OpsError> {
        (**self).process(pid)
    }
    fn processes(&self) -> Result<Vec<ProcInfo>, OpsError> {
        (**self).processes()
    }
    fn processes_light(
        &self,
        uid_of: Option<&str>,
        cgroups: bool,
    ) -> Result<Vec<ProcInfo>, OpsError> {
        (**self).processes_light(uid_of, cgroups)
    }
    fn pids(&self) -> Result<Vec<i32>, OpsError> {
        (**self).pids()
    }
    fn children_hint(&self, pid: i32, one_thread: bool) -> Result<Option<Vec<i32>>, OpsError> {
        (**self).children_hint(pid, one_thread)
    }
    fn state_of(&self, pid: i32, starttime: u64) -> Option<char> {
        (**self).state_of(pid, starttime)
    }
    fn pin_child(
        &self,
        parent: i32,
        pid: i32,
        cgroups: bool,
    ) -> Result<Option<(Pinned, ProcInfo, bool)>, OpsError> {
        (**self).pin_child(parent, pid, cgroups)
    }
    fn threads(&self, pid: i32) -> Result<Vec<(i32, bool)>, OpsError> {
        (**self).threads(pid)
    }
    fn set_normal_policy(&self, tid: i32) -> Result<(), OpsError> {
        (**self).set_normal_policy(tid)
    }
    fn deprioritize_thread(&self, tid: i32, cpu: Option<u32>) -> Result<String, OpsError> {
        (**self).deprioritize_thread(tid, cpu)
    }
    fn children(&self, pid: i32) -> Result<Option<Vec<i32>>, OpsError> {
        (**self).children(pid)
    }
    fn pin(&self, pid: i32, starttime: u64) -> Result<Pinned, OpsError> {
        (**self).pin(pid, starttime)
    }
    fn signal_pinned(&self, p: &Pinned, sig: i32) -> Result<(), OpsError> {
        (**self).signal_pinned(p, sig)
    }
    fn signal(&self, pid: i32, starttime: u64, sig: i32) -> Result<(), OpsError> {
        (**self).signal(pid, starttime, sig)
    }
    fn cgroup_members(&self, p: &Pinned, path: &str) -> Result<Vec<i32>, OpsError> {
        (**self).cgroup_members(p, path)
    }
    fn kill_cgroup(&self, p: &Pinned, path: &str) -> Result<(), OpsError> {
        (**self).kill_cgroup(p, path)
    }
    fn freeze_cgroup(&self, p: &Pinned, path: &str) -> Result<(), OpsError> {
        (**self).freeze_cgroup(p, path)
    }
    fn quarantine_cgroup(&self, p: &Pinned, from: &str) -> Result<String, OpsError> {
        (**self).quarantine_cgroup(p, from)
    }
    fn move_to_cgroup(
        &self,
        pid: i32,
        starttime: u64,
        to: &str,
        back: &str,
    ) -> Result<(), OpsError> {
        (**self).move_to_cgroup(pid, starttime, to, back)
    }
    fn kill_quarantine(&self, path: &str, remove: bool) -> Result<(), OpsError> {
        (**self).kill_quarantine(path, remove)
    }
    fn remove_quarantine(&self, path: &str) {
        (**self).remove_quarantine(path)
    }
    fn hold_forks(
        &self,
        p: &Pinned,
        path: &str,
        machine: bool,
    ) -> Result<Option<ForkHold>, OpsError> {
        (**self).hold_forks(p, path, machine)
    }
    fn release_forks(&self, hold: &ForkHold) -> Result<(), OpsError> {
        (**self).release_forks(hold)
    }
    fn restart_unit(&self, unit: &str) -> Result<(), OpsError> {
        (**self).restart_unit(unit)
    }
    fn fuse_connection(&self, connection: u64) -> Result<FuseConnection, OpsError> {
        (**self).fuse_connection(connection)
    }
    fn abort_fuse(&self, connection: u64) -> Result<(), OpsError> {
        (**self).abort_fuse(connection)
    }
    fn sync_filesystems(&self, timeout: Duration) -> bool {
        (**self).sync_filesystems(timeout)
    }
    fn kexec_loaded(&self) -> bool {
        (**self).kexec_loaded()
    }
    fn restart(&self, method: RestartMethod) -> Result<(), OpsError> {
        (**self).restart(method)
    }
    fn cpu_interrupts(&self, cpu: u32) -> Option<u64> {
        (**self).cpu_interrupts(cpu)
    }
    fn emergency_restart(&self) -> Result<(), OpsError> {
        (**self).emergency_restart()
    }
}

/// The name prefix of a quarantine cgroup (`quarantine` step).
pub const QUARANTINE: &str = "selfheal-quarantine-";

/// True when cgroup `path` is a quarantine selfheal made directly beneath
/// `parent`: its processes still count as `parent`'s (the bomb's).
pub fn in_quarantine_beneath(path: &str, parent: &str) -> bool {
    path.strip_prefix(parent.trim_end_matches('/'))
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|name| name.starts_with(QUARANTINE) && !name.contains('/'))
}

/// Where the quarantine for a bomb whose oldest process is `pid` goes:
/// beneath the bomb's cgroup `from`.
pub fn quarantine_path(from: &str, pid: i32) -> String {
    format!("{}/{QUARANTINE}{pid}", from.trim_end_matches('/'))
}
