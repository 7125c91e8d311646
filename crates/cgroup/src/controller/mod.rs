//! The kernel files of each controller, one controller per file.
//!
//! Each module reads and writes its controller's files in one cgroup
//! directory, for v1 (`*_v1`) and v2 (`*_v2`) naming, and keeps the text
//! parsing in pure functions tested on kernel output.

pub mod cpu;
pub mod cpuset;
pub mod freezer;
pub mod io;
pub mod memory;
pub mod pids;

use std::fmt;

use cpu::CpuMax;

/// A cgroup controller selfheal asks the hierarchy about or acts through.
/// Its [`Controller::as_str`] name is the kernel's (`/proc/self/mountinfo`
/// options, `cgroup.controllers`, `cgroup.subtree_control`, the
/// `/proc/PID/cgroup` controller lists). What the kernel lists stays text
/// ([`crate::V1Mount::controllers`]): it may name controllers this enum
/// does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Controller {
    /// Task count (`pids`).
    Pids,
    /// Memory (`memory`).
    Memory,
    /// CPU bandwidth and, on v1, real-time budget (`cpu`).
    Cpu,
    /// v1 CPU accounting, usually co-mounted with `cpu` (`cpuacct`).
    Cpuacct,
    /// CPU and memory-node placement (`cpuset`).
    Cpuset,
    /// v2 block I/O (`io`).
    Io,
    /// v1 block I/O (`blkio`).
    Blkio,
    /// Freezing (`freezer`; built into v2, where no controller is listed).
    Freezer,
}

impl Controller {
    /// Every controller, in declaration order.
    pub const ALL: &'static [Controller] = &[
        Controller::Pids,
        Controller::Memory,
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Cpuset,
        Controller::Io,
        Controller::Blkio,
        Controller::Freezer,
    ];

    /// The kernel's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Controller::Pids => "pids",
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Cpuset => "cpuset",
            Controller::Io => "io",
            Controller::Blkio => "blkio",
            Controller::Freezer => "freezer",
        }
    }

    /// True when a kernel controller list (`["cpu", "cpuacct"]`) has it.
    pub fn is_in(self, list: &[String]) -> bool {
        list.iter().any(|c| c == self.as_str())
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Limits to apply to a cgroup. `None` leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// Maximum number of tasks (processes and threads): `pids.max`.
    pub pids_max: Option<u64>,
    /// Memory limit in bytes: v1 `memory.limit_in_bytes`, v2 `memory.max`.
    pub memory_max_bytes: Option<u64>,
    /// With a memory limit, also forbid swap so the limit is real: v1
    /// `memory.memsw.limit_in_bytes` = the limit, v2 `memory.swap.max` = 0
    /// (skipped when the kernel offers no swap accounting).
    pub memory_swap_off: bool,
    /// CFS bandwidth: v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`, v2 `cpu.max`.
    pub cpu_max: Option<CpuMax>,
    /// CPUs the tasks may run on: `cpuset.cpus`.
    pub cpuset_cpus: Option<Vec<usize>>,
    /// Real-time budget per `cpu.rt_period_us` (v1 with CONFIG_RT_GROUP_SCHED
    /// only). A cgroup with 0 (the default for new ones) cannot run
    /// SCHED_FIFO/RR tasks at all; a positive value lets them run but caps
    /// them, per CPU, to that share of each period.
    pub rt_runtime_us: Option<u64>,
}

/// Parses "flat keyed" files (`key value` per line: `cgroup.events`,
/// `memory.events`, `pids.events`, `cpu.stat`, v1 `memory.oom_control`).
/// Lines whose value is not an integer are skipped.
pub fn parse_flat_keyed(text: &str) -> Vec<(&str, u64)> {
    text.lines()
        .filter_map(|line| {
            let mut it = line.split_whitespace();
            let key = it.next()?;
            let value = it.next()?.parse().ok()?;
            Some((key, value))
        })
        .collect()
}

/// The value of `key` in flat-keyed text.
pub fn flat_keyed_value(text: &str, key: &str) -> Option<u64> {
    // Without collecting: the hang pipeline's sweep calls this every
    // second for every limited cgroup. Same lines as `parse_flat_keyed`.
    text.lines().find_map(|line| {
        let mut it = line.split_whitespace();
        let k = it.next()?;
        let v = it.next()?.parse().ok()?;
        (k == key).then_some(v)
    })
}

/// Parses a limit that may be `max` (v2) into `None`.
pub fn parse_max(text: &str) -> Option<Option<u64>> {
    match text.trim() {
        "max" => Some(None),
        t => t.parse().ok().map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_keyed_files() {
        let events = "populated 1\nfrozen 0\n";
        assert_eq!(
            parse_flat_keyed(events),
            vec![("populated", 1), ("frozen", 0)]
        );
        assert_eq!(flat_keyed_value(events, "frozen"), Some(0));
        assert_eq!(flat_keyed_value(events, "missing"), None);
        // A non-numeric value is skipped rather than misread.
        assert_eq!(parse_flat_keyed("max.imposed x\nmax 3\n"), vec![("max", 3)]);
    }

    #[test]
    fn max_values() {
        assert_eq!(parse_max("max\n"), Some(None));
        assert_eq!(parse_max("1024\n"), Some(Some(1024)));
        assert_eq!(parse_max("-1"), None);
    }

    #[test]
    fn names_are_the_kernels() {
        let names: Vec<String> = Controller::ALL.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            names,
            ["pids", "memory", "cpu", "cpuacct", "cpuset", "io", "blkio", "freezer"]
        );
        let list = vec!["cpu".to_string(), "cpuacct".to_string()];
        assert!(Controller::Cpu.is_in(&list) && Controller::Cpuacct.is_in(&list));
        assert!(!Controller::Cpuset.is_in(&list), "a prefix is not a match");
    }
}
