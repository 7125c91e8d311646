//! `[heavy]`: the heavy detector (task snapshots and diagnosis) and the
//! cheap sweep that wakes it for hangs the light detector's metrics cannot
//! see (D-state tasks, cgroups near their memory or pids limit).

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;

/// `[heavy]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeavyConfig {
    /// Time between the heavy detector's two snapshots of every task.
    #[serde(deserialize_with = "de_interval")]
    pub interval: HumanDuration,
    /// A task in uninterruptible sleep (D) without a context switch for this long is hung.
    #[serde(deserialize_with = "de_nonzero")]
    pub dstate_bound: HumanDuration,
    /// How often the sweep checks the limited cgroups' counters and whether
    /// tasks are blocked on I/O (then it reads every task's state); `"0"`
    /// turns the sweep off.
    pub sweep_interval: HumanDuration,
    /// Without the D-state tracer: read every task's state at least this
    /// often even when none is blocked on I/O (D states on locks and the
    /// like); `"0"` never.
    pub dstate_full_scan: HumanDuration,
    /// Find D states with an eBPF program on the scheduler's context
    /// switches (root, kernel with BPF and tracefs): every wait, whatever
    /// it waits for, found and dated exactly, at the cost of a map read per
    /// sweep. `false`, or where it cannot load, scans `/proc` instead.
    pub dstate_tracer: bool,
    /// Tasks held on purpose (a frozen cgroup or filesystem, a stopped or
    /// traced FUSE server, throttled I/O) are recorded once and never acted
    /// on; held longer than this, one alert (rule `held_too_long`) is
    /// raised. `"0"` = never.
    pub held_alert_after: HumanDuration,

    /// Ignore a trigger for a suspect already diagnosed this recently.
    pub rediagnose_after: HumanDuration,
    /// SCHED_FIFO priority of the hang pipeline thread (below the light
    /// detector's); 0 keeps normal scheduling.
    #[serde(deserialize_with = "de_priority")]
    pub realtime_priority: u8,
    /// Machine-wide memory exhaustion: MemAvailable below this percentage.
    #[serde(deserialize_with = "de_percent")]
    pub mem_available_percent: f64,
    /// Machine-wide exhaustion is also imminent when MemAvailable is below
    /// twice `mem_available_percent` and, at the rate it fell between the
    /// two snapshots, would reach zero within this time (a hog growing
    /// faster than the heavy detector's threshold can catch: the kernel's
    /// OOM killer would act first); `"0"` turns the trend test off.
    pub mem_exhaustion_horizon: HumanDuration,
    /// Memory no process accounts for (a kernel leak: the OOM killer has
    /// nothing to free, and the kernel panics when it runs out) counts as
    /// imminent exhaustion from this much MemAvailable down, at the same
    /// `mem_exhaustion_horizon`: a controlled restart needs seconds, and
    /// at twice `mem_available_percent` a fast leak leaves it under one.
    #[serde(deserialize_with = "de_percent")]
    pub mem_unaccounted_percent: f64,
    /// Machine-wide thrashing: PSI memory `full` avg10 at least this.
    #[serde(deserialize_with = "de_percent")]
    pub psi_memory_full: f64,
    /// A cgroup is nearly exhausted when its unreclaimable memory (anon +
    /// shmem) reaches this percentage of its limit.
    #[serde(deserialize_with = "de_percent")]
    pub cgroup_memory_percent: f64,
    /// A cgroup whose task count reaches this percentage of its pids limit
    /// while forks are being refused is fork-bombed.
    #[serde(deserialize_with = "de_percent")]
    pub cgroup_pids_percent: f64,
    /// Without a pids limit: a process tree, user or cgroup with at least
    /// this many tasks that is still growing is a fork bomb.
    pub fork_bomb_tasks: u32,
    /// Share of a snapshot interval a task must run to count as
    /// monopolising its CPU (RT hog, kernel stall culprit).
    #[serde(deserialize_with = "de_percent")]
    pub monopoly_percent: f64,
    /// A memory cgroup in which the kernel's OOM killer killed at least
    /// this many processes within `oom_loop_window` is in a fill-and-kill
    /// loop (diagnosed even when it looks fine between sweeps); 0 turns
    /// the check off.
    pub oom_loop_kills: u32,
    /// The window `oom_loop_kills` counts in.
    #[serde(deserialize_with = "de_nonzero")]
    pub oom_loop_window: HumanDuration,
}

impl Default for HeavyConfig {
    fn default() -> Self {
        HeavyConfig {
            interval: HumanDuration::from_millis(100),
            dstate_bound: HumanDuration::from_secs(2),
            sweep_interval: HumanDuration::from_secs(1),
            dstate_full_scan: HumanDuration::from_secs(10),
            dstate_tracer: true,
            held_alert_after: HumanDuration::from_secs(0),
            rediagnose_after: HumanDuration::from_secs(5),
            realtime_priority: 40,
            mem_available_percent: 5.0,
            mem_exhaustion_horizon: HumanDuration::from_secs(3),
            mem_unaccounted_percent: 20.0,
            psi_memory_full: 20.0,
            cgroup_memory_percent: 90.0,
            cgroup_pids_percent: 90.0,
            fork_bomb_tasks: 200,
            monopoly_percent: 80.0,
            oom_loop_kills: 3,
            oom_loop_window: HumanDuration::from_secs(30),
        }
    }
}

fn de_interval<'de, D: Deserializer<'de>>(d: D) -> Result<HumanDuration, D::Error> {
    let v = HumanDuration::deserialize(d)?;
    let ms = v.get().as_millis();
    if !(10..=5_000).contains(&ms) {
        return Err(de::Error::custom(format!(
            "snapshot interval {v} is out of range; use 10ms to 5s (default 100ms)"
        )));
    }
    Ok(v)
}

pub(crate) fn de_nonzero<'de, D: Deserializer<'de>>(d: D) -> Result<HumanDuration, D::Error> {
    let v = HumanDuration::deserialize(d)?;
    if v.get().is_zero() {
        return Err(de::Error::custom("this bound must be greater than zero"));
    }
    Ok(v)
}

pub(crate) fn de_priority<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let v = i64::deserialize(d)?;
    if !(0..=99).contains(&v) {
        return Err(de::Error::custom(format!(
            "realtime_priority = {v} is out of range; SCHED_FIFO priorities are 1 to 99, 0 disables"
        )));
    }
    Ok(v as u8)
}

pub(crate) fn de_percent<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if !(0.0..=100.0).contains(&v) {
        return Err(de::Error::custom(format!(
            "{v} is not a percentage; use 0 to 100"
        )));
    }
    Ok(v)
}
