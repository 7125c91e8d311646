//! Detection: where a hang is first noticed.
//!
//! - [`light`]: SHFH's light detector. Rules (acceptable ranges with a
//!   sustain time) evaluated on every sample by a real-time thread that
//!   allocates nothing and never blocks; alerts go to the heavy detector
//!   through a bounded queue.
//! - [`calibrate`]: learns this machine's normal ranges and writes rule
//!   thresholds that `watch` uses.
//! - [`heartbeat`]: the light thread's proof of life, read by the watchdog
//!   chain.
//! - [`stall`]: per-CPU stall detection with real-time canary threads.
//! - [`host_stops`]: in a VM, the host's checkpoint stops on the guest's
//!   clock, to excuse the part of a stall they explain.
//! - [`watchdog`]: the watchdog chain over the detectors' heartbeats.
#![forbid(unsafe_code)]

pub mod calibrate;
pub mod heartbeat;
pub mod host_stops;
pub mod light;
pub mod stall;
pub mod watchdog;

pub use heartbeat::Heartbeat;
pub use light::{
    Alert, AlertInstance, LightDetector, LightShared, LightStats, LightThread, LightThreadConfig,
};
