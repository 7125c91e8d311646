//! The hang path the daemon runs, from every input source to a recovery
//! action.
//!
//! ```text
//! light thread ──Alert──► forwarder ─┐
//! stall canaries ──StallEvent────────┤
//! watchdog chain ──WatchdogEvent─────┼─► pipeline thread ─► heavy detector ─► recovery ladder
//! kmsg follower ──KernelReport───────┤        │ (sweep every heavy.sweep_interval)
//! tests / CLI ──Trigger::Manual──────┘        └─► events (alert, diagnosis, dismissed, recovery, kernel, watchdog)
//! ```
//!
//! - [`pipeline`]: [`HangPipeline`], what the daemon starts and stops: the
//!   input queue, the pipeline thread, and the threads it owns.
//! - `sources`: one function per input source (kernel thresholds, stall
//!   detector, kmsg follower, D-state tracer, watchdog chain, light
//!   alerts), each wiring it to the queue.
//! - `worker`: the pipeline thread: records every input as an event,
//!   sweeps, runs the heavy detector (`selfheal-diagnose`) on a trigger and
//!   hands hangs to the recovery ladder (`selfheal-recover`).
//! - [`metrics`]: its counters and Prometheus collector.
//!
//! The heavy detector wakes on a light alert, a stall, a watchdog miss, a
//! kernel verdict or a sweep finding; never on a timer alone. Every source
//! hands over with `try_send`: none ever blocks on the pipeline.
#![forbid(unsafe_code)]

mod details;
mod excuse;
pub mod metrics;
pub mod pipeline;
mod sources;
mod worker;

pub use pipeline::{HangPipeline, PipelineError, PipelineOptions};
