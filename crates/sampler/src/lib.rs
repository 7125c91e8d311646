//! The sampler: SHFH's nine metrics (and PSI, steal) computed from /proc.
//!
//! A [`Sample`] is flat and indexable: system-wide values by
//! [`SystemMetric`], per-CPU values by [`CpuMetric`], per-disk values by
//! [`DiskMetric`]. Rules, calibration and `/metrics` all address metrics by
//! these enums and their stable names, so a new metric is added in one place.
//! Unavailable values (no PSI, offline CPU) are `NaN`; every comparison with
//! `NaN` is false, so a missing metric can never fire a rule.
#![forbid(unsafe_code)]

mod board;
mod metric;
mod sample;

pub use board::SampleBoard;
pub use metric::{CpuMetric, DiskMetric, MetricRef, Scope, SystemMetric};
pub use sample::{Sample, Sampler, SamplerError};
pub use selfheal_procfs::diskstats::DevName;
pub use selfheal_procfs::system::{Features, ReaderOptions, MAX_DISKS};
