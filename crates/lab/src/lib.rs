//! The selfheal hang lab: boots a Debian cloud kernel in QEMU, injects real
//! kernel and user-space hangs, and measures selfheal side by side with the
//! kernel's own detectors (soft/hard lockup, hung task, RCU stall, OOM).
//!
//! Layers, each usable alone: [`setup`] (apt, kernel cache) → [`build`]
//! (module, guest helper, initramfs) → [`qemu`] (one boot) → [`parse`] (serial
//! logs) → [`analyze`] (one scored run) → [`report`]/[`plot`] (summaries).
#![forbid(unsafe_code)]

pub mod analyze;
pub mod availability;
pub mod build;
pub mod cpio;
pub mod labconfig;
pub mod logs;
pub mod modules;
pub mod parse;
pub mod plot;
pub mod profile;
pub mod progress;
pub mod qemu;
pub mod report;
pub mod scenario;
pub mod setup;
