//! Where the light detector's alert queue ends: the hang pipeline (heavy
//! detector, per-CPU stall detector, watchdog chain, kernel reports and the
//! recovery ladder, from `selfheal-hangwatch`).
//!
//! The pipeline records every alert as an event (with the metric snapshot
//! as evidence) and decides whether to wake the heavy detector; its
//! collector joins `/metrics`; its health gates systemd's `WATCHDOG=1`.

use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use selfheal_config::Config;
use selfheal_detect::{Alert, Heartbeat};
use selfheal_event::EventSink;
use selfheal_hangwatch::HangPipeline;
use selfheal_metrics::Registry;
use selfheal_sampler::SampleBoard;

use crate::StartError;

/// Starts the pipeline, registers its metrics and returns the sender to
/// hand to the light thread. Its notes (what it cannot do here) are added
/// to `notes`.
pub(crate) fn start(
    config: &Config,
    board: Arc<SampleBoard>,
    heartbeat: Arc<Heartbeat>,
    sink: Arc<dyn EventSink>,
    registry: &Registry,
    notes: &mut Vec<String>,
) -> Result<(HangPipeline, SyncSender<Alert>), StartError> {
    let (pipeline, alerts) =
        HangPipeline::spawn(config, board, heartbeat, sink, config.daemon.dry_run)?;
    registry.register(pipeline.collector());
    notes.extend(pipeline.notes().iter().cloned());
    Ok((pipeline, alerts))
}
