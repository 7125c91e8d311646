//! Metric identities: stable names, units and help text.

macro_rules! metrics {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = ($key:literal, $unit:literal, $help:literal)),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vm])* $var),+ }

        impl $name {
            /// Every metric, in index order.
            pub const ALL: &'static [$name] = &[$($name::$var),+];
            /// Number of metrics.
            pub const COUNT: usize = $name::ALL.len();

            /// Index into a sample's value array.
            pub fn index(self) -> usize { self as usize }

            /// The stable name used in rules, calibration and the API.
            pub fn name(self) -> &'static str {
                match self { $($name::$var => $key),+ }
            }

            /// Unit of the value: `percent`, `bytes`, `per_second`, `count`.
            pub fn unit(self) -> &'static str {
                match self { $($name::$var => $unit),+ }
            }

            /// One line of help for docs and `/metrics`.
            pub fn help(self) -> &'static str {
                match self { $($name::$var => $help),+ }
            }

            /// Looks a metric up by its stable name.
            pub fn from_name(s: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|m| m.name() == s)
            }
        }
    };
}

metrics! {
    /// Machine-wide metrics.
    SystemMetric {
        /// User + nice time across all CPUs.
        UserPercent = ("user_percent", "percent", "Share of all CPU time spent in user mode (incl. nice)."),
        /// System + irq + softirq time across all CPUs.
        SystemPercent = ("system_percent", "percent", "Share of all CPU time spent in the kernel (system, irq, softirq)."),
        /// I/O wait across all CPUs.
        IowaitPercent = ("iowait_percent", "percent", "Share of all CPU time idle with I/O outstanding."),
        /// Steal across all CPUs.
        StealPercent = ("steal_percent", "percent", "Share of all CPU time stolen by the hypervisor."),
        /// Idle across all CPUs.
        IdlePercent = ("idle_percent", "percent", "Share of all CPU time idle."),
        /// Context switches per second.
        ContextSwitchesPerSecond = ("context_switches_per_second", "per_second", "Context switches per second (SHFH cs)."),
        /// Interrupts per second.
        InterruptsPerSecond = ("interrupts_per_second", "per_second", "Interrupts serviced per second."),
        /// Forks per second.
        ForksPerSecond = ("forks_per_second", "per_second", "Processes and threads created per second."),
        /// Runnable tasks.
        RunnableTasks = ("runnable_tasks", "count", "Tasks runnable right now (SHFH run, procs_running)."),
        /// Runnable tasks divided by the number of online CPUs.
        RunnableTasksPerCpu = ("runnable_tasks_per_cpu", "ratio", "Runnable tasks per online CPU."),
        /// Tasks blocked on I/O.
        BlockedTasks = ("blocked_tasks", "count", "Tasks in uninterruptible I/O wait (SHFH blk, procs_blocked)."),
        /// Blocked tasks per online CPU.
        BlockedTasksPerCpu = ("blocked_tasks_per_cpu", "ratio", "Blocked tasks per online CPU."),
        /// Total memory.
        MemTotalBytes = ("mem_total_bytes", "bytes", "Total usable memory."),
        /// Free memory.
        MemFreeBytes = ("mem_free_bytes", "bytes", "Free memory (SHFH free)."),
        /// Available memory.
        MemAvailableBytes = ("mem_available_bytes", "bytes", "Memory available for new work without swapping (MemAvailable)."),
        /// Available memory as a share of total.
        MemAvailablePercent = ("mem_available_percent", "percent", "Available memory as a share of total."),
        /// Pages swapped out per second.
        SwapOutPagesPerSecond = ("swap_out_pages_per_second", "per_second", "Pages swapped out per second (SHFH pswpout)."),
        /// Pages swapped in per second.
        SwapInPagesPerSecond = ("swap_in_pages_per_second", "per_second", "Pages swapped in per second."),
        /// Major page faults per second.
        MajorFaultsPerSecond = ("major_faults_per_second", "per_second", "Major page faults per second."),
        /// OOM kills per second.
        OomKillsPerSecond = ("oom_kills_per_second", "per_second", "Kernel OOM kills per second."),
        /// PSI cpu some avg10.
        PsiCpuSomeAvg10 = ("psi_cpu_some_avg10", "percent", "PSI: share of time some tasks waited for CPU, last 10 s."),
        /// PSI cpu full avg10.
        PsiCpuFullAvg10 = ("psi_cpu_full_avg10", "percent", "PSI: share of time all non-idle tasks waited for CPU, last 10 s."),
        /// PSI memory some avg10.
        PsiMemorySomeAvg10 = ("psi_memory_some_avg10", "percent", "PSI: share of time some tasks stalled on memory, last 10 s."),
        /// PSI memory full avg10.
        PsiMemoryFullAvg10 = ("psi_memory_full_avg10", "percent", "PSI: share of time all non-idle tasks stalled on memory, last 10 s."),
        /// PSI io some avg10.
        PsiIoSomeAvg10 = ("psi_io_some_avg10", "percent", "PSI: share of time some tasks stalled on I/O, last 10 s."),
        /// PSI io full avg10.
        PsiIoFullAvg10 = ("psi_io_full_avg10", "percent", "PSI: share of time all non-idle tasks stalled on I/O, last 10 s."),
        /// Online CPUs.
        OnlineCpus = ("online_cpus", "count", "CPUs with a line in /proc/stat."),
        /// When MemAvailable runs out at the rate it is falling.
        MemExhaustionSeconds = ("mem_exhaustion_seconds", "seconds", "Seconds until MemAvailable runs out at the rate it fell over about the last second; absent while it is not falling."),
    }
}

metrics! {
    /// Per-CPU metrics.
    CpuMetric {
        /// User + nice.
        UserPercent = ("cpu_user_percent", "percent", "Share of this CPU's time in user mode (incl. nice) (SHFH usr)."),
        /// System + irq + softirq.
        SystemPercent = ("cpu_system_percent", "percent", "Share of this CPU's time in the kernel (system, irq, softirq) (SHFH sys)."),
        /// I/O wait.
        IowaitPercent = ("cpu_iowait_percent", "percent", "Share of this CPU's time idle with I/O outstanding (SHFH iowait)."),
        /// Steal.
        StealPercent = ("cpu_steal_percent", "percent", "Share of this CPU's time stolen by the hypervisor."),
        /// Idle.
        IdlePercent = ("cpu_idle_percent", "percent", "Share of this CPU's time idle."),
        /// How much of the wall-clock interval this CPU's accounting covered.
        AccountedPercent = ("cpu_accounted_percent", "percent", "CPU time accounted for this CPU as a share of wall-clock time; far below 100 means its accounting stopped."),
    }
}

metrics! {
    /// Per-block-device metrics.
    DiskMetric {
        /// Share of time the device had I/O in flight.
        BusyPercent = ("disk_busy_percent", "percent", "Share of time the device was busy (SHFH util)."),
        /// I/Os in flight.
        InFlight = ("disk_in_flight", "count", "I/O requests in flight on the device."),
    }
}

/// Which instances a metric has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// One value for the machine.
    System,
    /// One value per CPU.
    PerCpu,
    /// One value per block device.
    PerDisk,
}

impl Scope {
    /// `system`, `per_cpu` or `per_disk`.
    pub fn name(self) -> &'static str {
        match self {
            Scope::System => "system",
            Scope::PerCpu => "per_cpu",
            Scope::PerDisk => "per_disk",
        }
    }
}

/// Any metric, by scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricRef {
    /// A machine-wide metric.
    System(SystemMetric),
    /// A per-CPU metric.
    Cpu(CpuMetric),
    /// A per-disk metric.
    Disk(DiskMetric),
}

impl MetricRef {
    /// Looks any metric up by its stable name.
    pub fn from_name(s: &str) -> Option<MetricRef> {
        SystemMetric::from_name(s)
            .map(MetricRef::System)
            .or_else(|| CpuMetric::from_name(s).map(MetricRef::Cpu))
            .or_else(|| DiskMetric::from_name(s).map(MetricRef::Disk))
    }

    /// Every metric name, for error messages and docs.
    pub fn all_names() -> Vec<&'static str> {
        SystemMetric::ALL
            .iter()
            .map(|m| m.name())
            .chain(CpuMetric::ALL.iter().map(|m| m.name()))
            .chain(DiskMetric::ALL.iter().map(|m| m.name()))
            .collect()
    }

    /// The stable name.
    pub fn name(self) -> &'static str {
        match self {
            MetricRef::System(m) => m.name(),
            MetricRef::Cpu(m) => m.name(),
            MetricRef::Disk(m) => m.name(),
        }
    }

    /// The metric's scope.
    pub fn scope(self) -> Scope {
        match self {
            MetricRef::System(_) => Scope::System,
            MetricRef::Cpu(_) => Scope::PerCpu,
            MetricRef::Disk(_) => Scope::PerDisk,
        }
    }

    /// The metric's unit.
    pub fn unit(self) -> &'static str {
        match self {
            MetricRef::System(m) => m.unit(),
            MetricRef::Cpu(m) => m.unit(),
            MetricRef::Disk(m) => m.unit(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_resolve() {
        let names = MetricRef::all_names();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "duplicate metric name");
        for n in names {
            assert_eq!(MetricRef::from_name(n).unwrap().name(), n);
        }
        assert_eq!(
            MetricRef::from_name("cpu_system_percent").unwrap().scope(),
            Scope::PerCpu
        );
        assert!(MetricRef::from_name("sys").is_none());
    }

    #[test]
    fn indices_are_dense() {
        for (i, m) in SystemMetric::ALL.iter().enumerate() {
            assert_eq!(m.index(), i);
        }
        for (i, m) in CpuMetric::ALL.iter().enumerate() {
            assert_eq!(m.index(), i);
        }
    }
}
