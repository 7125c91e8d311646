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
use selfheal_detect::host_stops::SharedHostStops;
use selfheal_detect::{Alert, Heartbeat};
use selfheal_event::EventSink;
use selfheal_hangwatch::{HangPipeline, PipelineOptions};
use selfheal_metrics::Registry;
use selfheal_sampler::SampleBoard;

use crate::StartError;

/// Starts the pipeline, registers its metrics and returns the sender to
/// hand to the light thread. `host_stops`: in a guest, the host's
/// checkpoint stops, which excuse the part of a CPU stall they fill. Its notes (what it cannot do here) are added
/// to `notes`.
pub(crate) fn start(
    config: &Config,
    board: Arc<SampleBoard>,
    heartbeat: Arc<Heartbeat>,
    sink: Arc<dyn EventSink>,
    registry: &Registry,
    host_stops: Option<SharedHostStops>,
    notes: &mut Vec<String>,
) -> Result<(HangPipeline, SyncSender<Alert>), StartError> {
    let mut opts = PipelineOptions::new(config, board, heartbeat, sink, config.daemon.dry_run);
    opts.host_stops = host_stops;
    let (pipeline, alerts) = HangPipeline::spawn_with(opts)?;
    registry.register(pipeline.collector());
    notes.extend(pipeline.notes().iter().cloned());
    Ok((pipeline, alerts))
}
