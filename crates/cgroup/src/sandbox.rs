//! A throw-away cgroup with pids, memory and CPU limits, for running the
//! faults selfheal injects on the host (RT busy loops, fork bombs, memory
//! hogs, D-state tasks) without endangering the machine.
//!
//! ```no_run
//! use selfheal_cgroup::{Sandbox, SandboxConfig};
//! let sandbox = Sandbox::new(SandboxConfig::new("forkbomb").pids_max(20))?;
//! let mut child = sandbox.spawn(std::process::Command::new("sh").args(["-c", "f(){ f|f& };f"]))?;
//! // ... observe ...
//! drop(sandbox); // SIGKILLs everything inside, removes the cgroups
//! child.wait()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Commands join the sandbox between fork and exec (they write `0` to each
//! pre-opened `cgroup.procs`), so not one instruction runs outside it.
//! Dropping the sandbox kills everything inside it and removes its cgroups,
//! so a failing test never leaves a fork bomb or a memory hog behind. The
//! parent cgroup (`selfheal-sandbox` by default, at the root of each
//! hierarchy) is created once and reused.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::OwnedFd;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::cgroup::{Cgroup, KillReport};
use crate::controller::cpu::CpuMax;
use crate::controller::{cpuset, Controller, Limits};
use crate::error::CgroupError;
use crate::hierarchy::{ControllerLocation, Hierarchy, Mode};
use crate::manager::{CgroupManager, V1Manager, V2Manager};

/// Makes sandbox names unique within this process.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Why a sandbox could not be created or used.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The machine or the caller cannot host a sandbox; tests should skip.
    #[error("sandbox needs root and a writable cgroup hierarchy: {reason}")]
    Unavailable {
        /// What is missing.
        reason: String,
    },
    /// The configuration is invalid.
    #[error("invalid sandbox configuration: {0}")]
    Config(String),
    /// A cgroup operation on the sandbox failed.
    #[error("sandbox {sandbox}: {source}")]
    Cgroup {
        /// The sandbox's cgroup path.
        sandbox: String,
        /// The failure.
        #[source]
        source: CgroupError,
    },
    /// The command could not be started inside the sandbox (it never ran).
    #[error("cannot start {program} inside sandbox {sandbox}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The sandbox's cgroup path.
        sandbox: String,
        /// The error from fork/exec or from joining the cgroups.
        #[source]
        source: io::Error,
    },
}

impl SandboxError {
    /// True when the sandbox cannot exist here (not root, read-only or
    /// missing cgroup controllers): a test should print this and skip.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, SandboxError::Unavailable { .. })
    }
}

/// How a sandbox is kept on its CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuPinning {
    /// A cpuset cgroup: the tasks cannot leave that CPU.
    Cpuset(usize),
    /// No cpuset controller available (typical on v2 where it is not
    /// enabled): each spawned command calls sched_setaffinity before exec.
    /// Its children inherit the mask, but a task may widen it again.
    Affinity(usize),
}

/// What a sandbox limits. Defaults: 64 tasks, 512 MiB without swap, one
/// CPU's worth of time, no pinning, no real-time budget.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxConfig {
    name: String,
    parent: String,
    pids_max: u64,
    memory_max_bytes: u64,
    cpus: Option<f64>,
    pin_cpu: Option<usize>,
    rt_runtime_us: Option<u64>,
    unified: bool,
    v1_freezer: bool,
    kill_timeout: Duration,
}

impl SandboxConfig {
    /// A configuration for sandboxes named `name` (letters, digits, `-`, `_`).
    pub fn new(name: &str) -> SandboxConfig {
        SandboxConfig {
            name: name.to_string(),
            parent: "selfheal-sandbox".into(),
            pids_max: 64,
            memory_max_bytes: 512 << 20,
            cpus: Some(1.0),
            pin_cpu: None,
            rt_runtime_us: None,
            unified: true,
            v1_freezer: true,
            kill_timeout: Cgroup::KILL_TIMEOUT,
        }
    }

    /// The parent cgroup path under each hierarchy root (default `selfheal-sandbox`).
    pub fn parent(mut self, parent: &str) -> Self {
        self.parent = parent.trim_matches('/').to_string();
        self
    }

    /// Maximum number of tasks, threads included (`pids.max`).
    pub fn pids_max(mut self, max: u64) -> Self {
        self.pids_max = max;
        self
    }

    /// Memory limit; swap is forbidden too so the limit is real.
    pub fn memory_max_bytes(mut self, bytes: u64) -> Self {
        self.memory_max_bytes = bytes;
        self
    }

    /// CPU time limit in CPUs (0.5 = half of one CPU); `None` for no limit.
    pub fn cpus(mut self, cpus: Option<f64>) -> Self {
        self.cpus = cpus;
        self
    }

    /// Keep every task on CPU `cpu`: a cpuset when available, else affinity (see [`CpuPinning`]).
    pub fn pin_cpu(mut self, cpu: usize) -> Self {
        self.pin_cpu = Some(cpu);
        self
    }

    /// Allow SCHED_FIFO/RR tasks, capped to `runtime_us` per 1 s period per
    /// CPU: the only brake on a real-time busy loop, since the CPU quota
    /// covers normal tasks only. Needs a v1 cpu hierarchy with
    /// CONFIG_RT_GROUP_SCHED (`cpu.rt_runtime_us`). On such kernels a
    /// sandbox without a budget refuses real-time tasks outright: both
    /// `sched_setscheduler` inside it and spawning from a real-time caller
    /// (the child inherits the policy, joining fails, spawn errors). The
    /// shared parent's budget is raised to fit and left there.
    pub fn rt_runtime_us(mut self, runtime_us: u64) -> Self {
        self.rt_runtime_us = Some(runtime_us);
        self
    }

    /// In a hybrid layout, also join the cgroup2 hierarchy (default on): it
    /// brings the atomic `cgroup.kill` and the v2 freezer. Off exercises
    /// the v1 freezer and the freeze–kill–thaw loop.
    pub fn use_unified(mut self, on: bool) -> Self {
        self.unified = on;
        self
    }

    /// Join the v1 freezer hierarchy when mounted (default on).
    pub fn use_v1_freezer(mut self, on: bool) -> Self {
        self.v1_freezer = on;
        self
    }

    /// How long teardown keeps killing before giving up (default 10 s).
    pub fn kill_timeout(mut self, timeout: Duration) -> Self {
        self.kill_timeout = timeout;
        self
    }
}

/// A live sandbox. Dropping it kills everything inside and removes it.
#[derive(Debug)]
pub struct Sandbox {
    cgroup: Cgroup,
    rel: String,
    pinning: Option<CpuPinning>,
    kill_timeout: Duration,
    closed: bool,
}

impl Sandbox {
    /// Creates a sandbox on this machine's hierarchies.
    pub fn new(config: SandboxConfig) -> Result<Sandbox, SandboxError> {
        if !selfheal_sys::process::is_root() {
            return Err(unavailable(format!(
                "running as uid {}, not root",
                selfheal_sys::process::geteuid()
            )));
        }
        let hierarchy = Hierarchy::detect().map_err(|e| unavailable(e.to_string()))?;
        Sandbox::with_hierarchy(&hierarchy, config)
    }

    /// Creates a sandbox on the given hierarchies.
    pub fn with_hierarchy(
        hierarchy: &Hierarchy,
        config: SandboxConfig,
    ) -> Result<Sandbox, SandboxError> {
        let valid_component = |c: &str| {
            !c.is_empty()
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        };
        if !valid_component(&config.name) || !config.parent.split('/').all(valid_component) {
            return Err(SandboxError::Config(format!(
                "name {:?} / parent {:?}: use letters, digits, '-', '_' (and '/' between parent levels)",
                config.name, config.parent
            )));
        }
        let mode = hierarchy
            .mode()
            .ok_or_else(|| unavailable("no cgroup hierarchy is mounted".into()))?;
        let rel = format!(
            "/{}/{}-{}-{}",
            config.parent,
            config.name,
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );

        let mut v1 = Vec::new();
        let mut v2 = Vec::new();
        let mut want = vec![Controller::Pids, Controller::Memory];
        if config.cpus.is_some() || config.rt_runtime_us.is_some() {
            want.push(Controller::Cpu);
        }
        let pinning = config.pin_cpu.map(|cpu| {
            if hierarchy.controller_location(Controller::Cpuset).is_some() {
                want.push(Controller::Cpuset);
                CpuPinning::Cpuset(cpu)
            } else {
                CpuPinning::Affinity(cpu)
            }
        });
        for c in want {
            match hierarchy.controller_location(c) {
                Some(ControllerLocation::V1(m)) if m.read_only => {
                    return Err(unavailable(format!(
                        "{} is mounted read-only",
                        m.mount_point.display()
                    )))
                }
                Some(ControllerLocation::V1(_)) => v1.push(c),
                Some(ControllerLocation::V2(_)) => v2.push(c),
                None => {
                    return Err(unavailable(format!(
                        "the {c} controller is neither mounted as cgroup v1 nor offered by cgroup2"
                    )))
                }
            }
        }
        if config.v1_freezer
            && hierarchy
                .v1_mount(Controller::Freezer)
                .is_some_and(|m| !m.read_only)
        {
            v1.push(Controller::Freezer);
        }
        let join_v2 =
            mode == Mode::V2 || !v2.is_empty() || (config.unified && mode == Mode::Hybrid);
        if join_v2 && hierarchy.v2.as_ref().is_some_and(|m| m.read_only) {
            return Err(unavailable("the cgroup2 mount is read-only".into()));
        }

        let cg_err = |source: CgroupError| {
            if source.is_permission() {
                unavailable(source.to_string())
            } else {
                SandboxError::Cgroup {
                    sandbox: rel.clone(),
                    source,
                }
            }
        };
        let mut managers: Vec<Box<dyn CgroupManager>> = Vec::new();
        if !v1.is_empty() {
            managers.push(Box::new(
                V1Manager::new(hierarchy, &rel, &v1).map_err(cg_err)?,
            ));
        }
        if join_v2 {
            managers.push(Box::new(
                V2Manager::new(hierarchy, &rel, &v2).map_err(cg_err)?,
            ));
        }
        let cgroup = Cgroup::from_managers(managers);
        let sandbox = Sandbox {
            cgroup,
            rel: rel.clone(),
            pinning,
            kill_timeout: config.kill_timeout,
            closed: false,
        };
        // From here on, Drop cleans up whatever was created.
        sandbox.cgroup.create().map_err(cg_err)?;
        let cpuset_cpus = match pinning {
            Some(CpuPinning::Cpuset(cpu)) => {
                let allowed = sandbox.parent_cpus().map_err(cg_err)?;
                if !allowed.is_empty() && !allowed.contains(&cpu) {
                    return Err(SandboxError::Config(format!(
                        "cpu {cpu} is not among the allowed CPUs {}",
                        cpuset::format_cpu_list(&allowed)
                    )));
                }
                Some(vec![cpu])
            }
            Some(CpuPinning::Affinity(cpu)) if cpu >= selfheal_sys::sched::cpus_configured() => {
                return Err(SandboxError::Config(format!("cpu {cpu} does not exist")));
            }
            _ => None,
        };
        sandbox
            .cgroup
            .apply(&Limits {
                pids_max: Some(config.pids_max),
                memory_max_bytes: Some(config.memory_max_bytes),
                memory_swap_off: true,
                cpu_max: config.cpus.map(CpuMax::from_cpus),
                cpuset_cpus,
                rt_runtime_us: config.rt_runtime_us,
            })
            .map_err(cg_err)?;
        Ok(sandbox)
    }

    /// CPUs the sandbox's cpuset parent allows (empty when unknown).
    fn parent_cpus(&self) -> Result<Vec<usize>, CgroupError> {
        for dir in self.cgroup.dirs() {
            if dir.join("cpuset.cpus").exists() {
                if let Some(parent) = dir.parent() {
                    return cpuset::read_effective_cpus(parent);
                }
            }
        }
        Ok(Vec::new())
    }

    /// Starts `cmd` inside the sandbox. The child joins every cgroup of the
    /// sandbox before `exec`; if joining fails the program never runs and
    /// this returns the error. The hooks stay on `cmd`: spawning it again
    /// (here) is fine, spawning it elsewhere would still join this sandbox.
    pub fn spawn(&self, cmd: &mut Command) -> Result<Child, SandboxError> {
        let program = cmd_name(cmd);
        let spawn_err = |source: io::Error| SandboxError::Spawn {
            program: program.clone(),
            sandbox: self.rel.clone(),
            source,
        };
        let mut fds = Vec::new();
        for path in self.cgroup.procs_files() {
            let file = OpenOptions::new().write(true).open(&path).map_err(|e| {
                spawn_err(io::Error::new(
                    e.kind(),
                    format!("open {}: {e}", path.display()),
                ))
            })?;
            fds.push(OwnedFd::from(file));
        }
        selfheal_sys::spawn::join_cgroups_before_exec(cmd, fds);
        if let Some(CpuPinning::Affinity(cpu)) = self.pinning {
            selfheal_sys::spawn::set_affinity_before_exec(cmd, &[cpu])
                .map_err(|e| spawn_err(e.into()))?;
        }
        cmd.spawn().map_err(spawn_err)
    }

    /// The sandbox's cgroup, for freezing, killing and reading counters.
    pub fn cgroup(&self) -> &Cgroup {
        &self.cgroup
    }

    /// The cgroup path, identical in every hierarchy (`/selfheal-sandbox/x-123-0`).
    pub fn rel_path(&self) -> &str {
        &self.rel
    }

    /// How the sandbox is kept on its CPU, if pinned.
    pub fn pinning(&self) -> Option<CpuPinning> {
        self.pinning
    }

    /// Kills everything inside (the sandbox stays usable).
    pub fn kill_all(&self) -> Result<KillReport, SandboxError> {
        self.cgroup
            .kill_all_within(self.kill_timeout)
            .map_err(|source| SandboxError::Cgroup {
                sandbox: self.rel.clone(),
                source,
            })
    }

    /// Kills everything inside and removes the cgroups, reporting failures
    /// (Drop does the same but can only log them).
    pub fn close(mut self) -> Result<KillReport, SandboxError> {
        self.closed = true;
        self.teardown()
    }

    fn teardown(&self) -> Result<KillReport, SandboxError> {
        let report = self.kill_all()?;
        self.cgroup
            .remove()
            .map_err(|source| SandboxError::Cgroup {
                sandbox: self.rel.clone(),
                source,
            })?;
        Ok(report)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        if let Err(e) = self.teardown() {
            tracing::error!(sandbox = %self.rel, error = %e, "sandbox teardown failed; processes or cgroups may be left behind");
        }
    }
}

fn unavailable(reason: String) -> SandboxError {
    SandboxError::Unavailable { reason }
}

fn cmd_name(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_hierarchy_means_unavailable_with_the_skip_message() {
        let err =
            Sandbox::with_hierarchy(&Hierarchy::default(), SandboxConfig::new("x")).unwrap_err();
        assert!(err.is_unavailable());
        assert!(
            err.to_string()
                .starts_with("sandbox needs root and a writable cgroup hierarchy: "),
            "{err}"
        );
    }

    #[test]
    fn read_only_or_incomplete_hierarchies_are_unavailable() {
        // A docker-style read-only v1 bind mount.
        let ro = Hierarchy::from_mountinfo(
            "652 649 0:33 /docker/x /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n\
             653 649 0:34 /docker/x /sys/fs/cgroup/pids ro - cgroup cgroup rw,pids\n",
        )
        .unwrap();
        let err = Sandbox::with_hierarchy(&ro, SandboxConfig::new("x")).unwrap_err();
        assert!(
            err.is_unavailable() && err.to_string().contains("read-only"),
            "{err}"
        );
        // v2 without the memory controller offered.
        let v2 = Hierarchy::from_mountinfo("41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
            .unwrap()
            .with_v2_controllers(&["pids"]);
        let err = Sandbox::with_hierarchy(&v2, SandboxConfig::new("x")).unwrap_err();
        assert!(
            err.is_unavailable() && err.to_string().contains("memory"),
            "{err}"
        );
    }

    #[test]
    fn names_are_validated() {
        for (name, parent) in [
            ("", "p"),
            ("a/b", "p"),
            ("..", "p"),
            ("ok", "a//b"),
            ("ok", "../x"),
        ] {
            let err = Sandbox::with_hierarchy(
                &Hierarchy::default(),
                SandboxConfig::new(name).parent(parent),
            )
            .unwrap_err();
            assert!(
                matches!(err, SandboxError::Config(_)),
                "{name:?} {parent:?}: {err}"
            );
        }
    }
}
