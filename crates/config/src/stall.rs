//! `[stall]`: the per-CPU stall detector; `[watchdog]`: the watchdog chain
//! that notices when the detectors themselves starve.

use std::path::PathBuf;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::heavy::{de_nonzero, de_priority};

/// `[stall]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StallConfig {
    /// Run the per-CPU canaries.
    pub enabled: bool,
    /// A CPU whose canary has not run for this long is stalled.
    #[serde(deserialize_with = "de_bound")]
    pub bound: HumanDuration,
    /// How often each canary ticks (and checks the others).
    #[serde(deserialize_with = "de_tick")]
    pub tick: HumanDuration,
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
