//! `[kmsg]`: following the kernel's own reports, and tightening the
//! kernel's detector thresholds.

use std::path::PathBuf;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;

/// `[kmsg]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KmsgConfig {
    /// Follow /dev/kmsg and record the kernel's verdicts as `kernel` events.
    pub enabled: bool,
    /// The device.
    pub path: PathBuf,
    /// Also record verdicts already in the kernel's buffer at start.
    pub replay: bool,
    /// Attach kernel reports this close in time to a diagnosis.
    pub correlate_window: HumanDuration,
    /// Lower `kernel.watchdog_thresh` (soft lockup after 2x, hard lockup
    /// after about 1x this many seconds) to this; 0 leaves it.
    #[serde(deserialize_with = "de_thresh")]
    pub watchdog_thresh: u32,
    /// Lower `kernel.hung_task_timeout_secs` to this; "0" leaves it.
    pub hung_task_timeout: HumanDuration,
    /// Put both back when selfheal stops.
    pub restore_on_exit: bool,
}

impl Default for KmsgConfig {
    fn default() -> Self {
        KmsgConfig {
            enabled: true,
            path: PathBuf::from("/dev/kmsg"),
            replay: false,
            correlate_window: HumanDuration::from_secs(30),
            watchdog_thresh: 0,
            hung_task_timeout: HumanDuration::from_secs(0),
            restore_on_exit: true,
        }
    }
}

fn de_thresh<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = i64::deserialize(d)?;
    if !(0..=60).contains(&v) {
        return Err(de::Error::custom(format!(
            "watchdog_thresh = {v} is out of range; the kernel accepts 1 to 60 seconds (0 leaves it alone)"
        )));
    }
    Ok(v as u32)
}
