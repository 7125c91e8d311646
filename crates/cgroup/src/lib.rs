//! Linux control groups for selfheal: v1, v2 and hybrid layouts.
//!
//! Three jobs:
//! 1. **Recovery** on a culprit's cgroup: [`Cgroup::freeze`], [`Cgroup::kill_all`],
//!    memory/pids/CPU readings ([`Cgroup::memory`], [`Cgroup::pids`], [`Cgroup::cpu_max`]).
//! 2. **Naming** a culprit: [`read_pid_cgroup`] → [`most_specific`] → [`systemd_unit_of`].
//! 3. **Containment** of injected faults: [`Sandbox`] creates a fresh cgroup
//!    with pids, memory and CPU limits and spawns commands inside it from
//!    their first instruction; dropping it kills everything inside.
//!
//! Layout:
//! - [`mountinfo`] and [`hierarchy`]: which controllers live where, parsed
//!   from `/proc/self/mountinfo` text (pure) and detected on the machine.
//! - [`proc_cgroup`]: `/proc/PID/cgroup` parsing and unit naming.
//! - [`manager`]: one [`CgroupManager`] trait with a v1 and a v2
//!   implementation; [`controller`]: one file per controller's kernel files.
//! - [`cgroup`]: the [`Cgroup`] handle and its policies (settling freeze,
//!   fork-proof kill, safe removal) over one or two managers.
//! - [`sandbox`]: the [`Sandbox`].
//!
//! All roots are parameters ([`Hierarchy::from_mountinfo`],
//! [`read_pid_cgroup_at`]) so tests run on captured text in temp dirs.
#![forbid(unsafe_code)]

pub mod cgroup;
pub mod controller;
pub mod error;
mod fs;
pub mod hierarchy;
pub mod manager;
pub mod mountinfo;
pub mod proc_cgroup;
pub mod sandbox;

pub use cgroup::{Cgroup, KillReport};
pub use controller::cpu::CpuMax;
pub use controller::freezer::FreezerState;
pub use controller::memory::MemoryStats;
pub use controller::pids::PidsStats;
pub use controller::{Controller, Limits};
pub use error::CgroupError;
pub use hierarchy::{Hierarchy, Mode, V1Mount, V2Mount};
pub use manager::{CgroupManager, V1Manager, V2Manager, Version};
pub use proc_cgroup::{
    most_specific, parse_proc_pid_cgroup, read_pid_cgroup, read_pid_cgroup_at, systemd_unit_of,
    ProcCgroupEntry,
};
pub use sandbox::{CpuPinning, Sandbox, SandboxConfig, SandboxError};
