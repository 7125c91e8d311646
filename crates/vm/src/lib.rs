//! `selfheal vm`: a QEMU guest watched from the host and rolled back in
//! place (issue 16, docs/vm.md).
//!
//! - [`qemu`]: the command line (QMP, pvpanic, the guest link's port).
//! - [`qmp`]: a QMP client that survives rollbacks.
//! - [`link`]: the host's end of the guest link.
//! - [`host`]: what the host sees of QEMU (CPU time of its vCPU threads).
//! - [`policy`]: what to do, from what was seen (pure).
//! - [`incident`] and [`details`]: the details of the events it records,
//!   read back typed.
//! - [`pauses`]: the checkpoint stops the guest lived through.
//! - [`tell`]: telling the guest of those stops, so it excuses them too.
//! - [`vcpu_wait`]: the vCPU threads' waits for a host CPU, told the same way.
//! - `run`: one run of QEMU, under the checkpoint engine; `supervise`:
//!   restarts, and the entry points for `selfheal vm` and `[[vm]]`.
#![forbid(unsafe_code)]

pub mod details;
pub mod events;
pub mod host;
pub mod incident;
pub mod link;
pub mod metrics;
pub mod pauses;
pub mod policy;
mod process;
pub mod qemu;
pub mod qmp;
mod run;
mod supervise;
pub mod tell;
pub mod vcpu_wait;

pub use metrics::{VmCollector, VmMetrics};
pub use process::ProcessError;
pub use run::{RunEnd, RunError, Stop};
pub use supervise::{run_vm, VmFinish, VmSupervisor};
