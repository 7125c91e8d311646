//! The diagnosis classes: what the heavy detector concludes, what the
//! recovery ladder is chosen by, and what events, metrics and the hang lab
//! name. One enum shared by config, diagnose and recover, so a new class
//! cannot be forgotten in a `match`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A diagnosis class. Its [`Class::as_str`] name is stable: the store, the
/// API, the config's `[recovery.ladder]` keys and the hang lab match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// A CPU monopolised by a real-time task (runaway loop at high priority).
    RtHog,
    /// A CPU stalled with no user-space culprit (kernel loop or lockup).
    KernelStall,
    /// Tasks stuck in uninterruptible sleep without progress for the bound.
    DState,
    /// Process count growing explosively in one tree, program or cgroup.
    ForkBomb,
    /// The machine or a cgroup out of memory, or thrashing.
    MemoryExhaustion,
    /// I/O stalled on a block device.
    IoStall,
    /// A kernel thread running without ever sleeping, taking its CPU from
    /// everything else there (preemptible, so the CPU is not stalled).
    RunawayKthread,
    /// Not a hang: heavy but legitimate load (a dismissal, never acted on).
    LegitimateLoad,
    /// Not a hang: tasks held on purpose — a frozen cgroup or filesystem,
    /// a stopped or traced process they wait for, throttled I/O (a
    /// dismissal, never acted on).
    Held,
}

impl Class {
    /// Every class, in declaration order.
    pub const ALL: &'static [Class] = &[
        Class::RtHog,
        Class::KernelStall,
        Class::DState,
        Class::ForkBomb,
        Class::MemoryExhaustion,
        Class::IoStall,
        Class::RunawayKthread,
        Class::LegitimateLoad,
        Class::Held,
    ];

    /// The stable name (`details.class`, `rule`, metric label, ladder key).
    pub fn as_str(self) -> &'static str {
        match self {
            Class::RtHog => "rt_hog",
            Class::KernelStall => "kernel_stall",
            Class::DState => "d_state",
            Class::ForkBomb => "fork_bomb",
            Class::MemoryExhaustion => "memory_exhaustion",
            Class::IoStall => "io_stall",
            Class::RunawayKthread => "runaway_kthread",
            Class::LegitimateLoad => "legitimate_load",
            Class::Held => "held",
        }
    }

    /// Index into [`Class::ALL`] (for counters).
    pub fn index(self) -> usize {
        Class::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }

    /// True for a fault (anything but a dismissal): recovery runs its ladder.
    pub fn is_fault(self) -> bool {
        !matches!(self, Class::LegitimateLoad | Class::Held)
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A class name that is not one of [`Class::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown diagnosis class `{0}`; known classes: {known}", known = known_classes())]
pub struct UnknownClass(pub String);

fn known_classes() -> String {
    Class::ALL
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for Class {
    type Err = UnknownClass;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Class::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownClass(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_stay_stable() {
        // The hang lab and stored events match these exact strings.
        let names: Vec<&str> = Class::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            names,
            [
                "rt_hog",
                "kernel_stall",
                "d_state",
                "fork_bomb",
                "memory_exhaustion",
                "io_stall",
                "runaway_kthread",
                "legitimate_load",
                "held"
            ]
        );
        for (i, c) in Class::ALL.iter().enumerate() {
            assert_eq!(c.as_str().parse::<Class>().unwrap(), *c);
            assert_eq!(serde_json::to_string(c).unwrap(), format!("\"{c}\""));
            assert_eq!(c.index(), i);
        }
        let err = "hang".parse::<Class>().unwrap_err().to_string();
        assert!(err.contains("`hang`") && err.contains("fork_bomb"), "{err}");
    }
}
