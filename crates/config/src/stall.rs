//! `[stall]`: the per-CPU stall detector; `[watchdog]`: the watchdog chain
//! that notices when the detectors themselves starve.

use std::path::PathBuf;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::heavy::{de_nonzero, de_percent, de_priority};

/// `[stall]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StallConfig {
    /// Run the per-CPU canaries.
    pub enabled: bool,
    /// A CPU whose canary has not run for this long is stalled.
    #[serde(deserialize_with = "de_bound")]
    pub bound: HumanDuration,
    /// How often each armed canary ticks (and checks the others).
    #[serde(deserialize_with = "de_tick")]
    pub tick: HumanDuration,
    /// Keep each canary parked while its CPU shows idle time; the light
    /// detector arms it when the CPU could be monopolised. `false` keeps
    /// every canary ticking (stalls seen sooner, one wake-up per tick and
    /// CPU even when idle).
    pub on_demand: bool,
    /// Arm a CPU's canary when its idle share of the last sample (idle +
    /// iowait, scaled by how much of the interval the kernel accounted) is
    /// below this percentage.
    #[serde(deserialize_with = "de_percent")]
    pub arm_idle_percent: f64,
    /// Park it again after this many consecutive samples at or above it.
    #[serde(deserialize_with = "de_disarm_after")]
    pub disarm_after: u32,
    /// SCHED_FIFO priority of the canaries: anything at a higher priority
    /// that holds a CPU for `bound` starves them. Keep it low (1).
    #[serde(deserialize_with = "de_priority")]
    pub canary_priority: u8,
    /// Let each canary count its CPU's context switches (and instructions
    /// where the PMU is available) with perf software/hardware counters.
    pub perf_counters: bool,
}

impl Default for StallConfig {
    fn default() -> Self {
        StallConfig {
            enabled: true,
            bound: HumanDuration::from_millis(200),
            tick: HumanDuration::from_millis(100),
            on_demand: true,
            arm_idle_percent: 20.0,
            disarm_after: 3,
            canary_priority: 1,
            perf_counters: true,
        }
    }
}

fn de_bound<'de, D: Deserializer<'de>>(d: D) -> Result<HumanDuration, D::Error> {
    let v = HumanDuration::deserialize(d)?;
    let ms = v.get().as_millis();
    if !(20..=60_000).contains(&ms) {
        return Err(de::Error::custom(format!(
            "stall bound {v} is out of range; use 20ms to 60s (default 200ms)"
        )));
    }
    Ok(v)
}

fn de_tick<'de, D: Deserializer<'de>>(d: D) -> Result<HumanDuration, D::Error> {
    let v = HumanDuration::deserialize(d)?;
    let ms = v.get().as_millis();
    if !(1..=10_000).contains(&ms) {
        return Err(de::Error::custom(format!(
            "canary tick {v} is out of range; use 1ms to 10s (default 100ms)"
        )));
    }
    Ok(v)
}

fn de_disarm_after<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = i64::deserialize(d)?;
    if !(1..=1000).contains(&v) {
        return Err(de::Error::custom(format!(
            "disarm_after = {v} is out of range; use 1 to 1000 samples (default 3)"
        )));
    }
    Ok(v as u32)
}

/// `[watchdog]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchdogConfig {
    /// How often the watcher checks the detectors' heartbeats.
    #[serde(deserialize_with = "de_nonzero")]
    pub period: HumanDuration,
    /// Escalate when a heartbeat is this many of its periods old.
    pub missed_periods: u32,
    /// SCHED_FIFO priority of the watcher (above the light detector's).
    #[serde(deserialize_with = "de_priority")]
    pub realtime_priority: u8,
    /// A hardware watchdog device to pet while the chain is healthy
    /// (e.g. "/dev/watchdog0"); unset = none. Once opened, the machine
    /// resets if selfheal stops petting it.
    pub device: Option<PathBuf>,
    /// Timeout to program into the device; "0" keeps the driver's.
    pub device_timeout: HumanDuration,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            period: HumanDuration::from_millis(500),
            missed_periods: 10,
            realtime_priority: 60,
            device: None,
            device_timeout: HumanDuration::from_secs(30),
        }
    }
}
