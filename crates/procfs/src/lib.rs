//! Readers for the /proc files selfheal samples.
//!
//! Every file has a pure parser (`parse_*`, tested on text captured from real
//! machines under `tests/fixtures/`) and a reader that owns the I/O. The
//! system-wide readers ([`system::SystemReader`]) keep their files open and
//! re-read them into buffers sized at start-up, so a sample allocates nothing.
//! Readers take the procfs root as a parameter so tests can point them at a
//! directory of captured text.
#![forbid(unsafe_code)]

pub mod diskstats;
pub mod error;
pub mod interrupts;
pub mod loadavg;
pub mod meminfo;
mod num;
pub mod pressure;
pub mod stat;
pub mod system;
pub mod task;
pub mod uptime;
pub mod vmstat;

pub use error::ProcError;
