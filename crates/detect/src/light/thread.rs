//! The light detector's own thread: SCHED_FIFO when permitted, a fixed
//! period, no allocation and no lock after start-up, and a hand-off to the
//! heavy detector that never blocks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use selfheal_sampler::{SampleBoard, Sampler};

use super::{Alert, LightDetector, LightStats};
use crate::heartbeat::Heartbeat;

/// How the light thread runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LightThreadConfig {
    /// Sampling period.
    pub period: Duration,
    /// SCHED_FIFO priority; 0 keeps normal scheduling.
    pub realtime_priority: u8,
    /// Stack size: small, because the thread's memory is locked.
    pub stack_size: usize,
}

impl Default for LightThreadConfig {
    fn default() -> Self {
        LightThreadConfig {
            period: Duration::from_millis(100),
            realtime_priority: 50,
            stack_size: 256 * 1024,
        }
    }
}

/// A running light-detector thread.
#[derive(Debug)]
pub struct LightThread {
    handle: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

/// Everything the thread shares with the rest of the daemon.
#[derive(Debug, Clone)]
pub struct LightShared {
    /// Where each sample is published for readers.
    pub board: Arc<SampleBoard>,
    /// Stamped every period.
    pub heartbeat: Arc<Heartbeat>,
    /// Counters.
    pub stats: Arc<LightStats>,
}

impl LightThread {
    /// Starts the thread. Alerts go to `alerts` with `try_send`: when the
    /// queue is full they are dropped and counted, never waited for.
    pub fn spawn(
        config: LightThreadConfig,
        mut sampler: Sampler,
        mut detector: LightDetector,
        shared: LightShared,
        alerts: SyncSender<Alert>,
    ) -> std::io::Result<LightThread> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::Builder::new()
            .name("selfheal-light".into())
            .stack_size(config.stack_size)
            .spawn(move || {
                set_realtime(config.realtime_priority, &shared.stats);
                let mut sample = sampler.new_sample();
                let mut next = Instant::now() + config.period;
                let mut logged_error = false;
                while !stop2.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else if now - next > config.period {
                        // Woke more than a period late (starved): count it
                        // and realign instead of bursting to catch up.
                        shared.stats.overruns.fetch_add(1, Ordering::Relaxed);
                        next = now;
                    }
                    next += config.period;
                    let start = Instant::now();
                    match sampler.sample(&mut sample) {
                        Ok(()) => {
                            shared.stats.samples.fetch_add(1, Ordering::Relaxed);
                            shared.board.publish(&sample);
                            detector.evaluate(&sample, &mut |a| {
                                if let Some(c) = shared.stats.alerts.get(a.rule_index as usize) {
                                    c.fetch_add(1, Ordering::Relaxed);
                                }
                                match alerts.try_send(a) {
                                    Ok(()) => {}
                                    Err(TrySendError::Full(_))
                                    | Err(TrySendError::Disconnected(_)) => {
                                        shared.stats.alerts_dropped.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            });
                            shared.heartbeat.beat();
                        }
                        Err(e) => {
                            shared.stats.sample_errors.fetch_add(1, Ordering::Relaxed);
                            if !logged_error {
                                tracing::error!(
                                    "light detector: {e}; will keep trying every period"
                                );
                                logged_error = true;
                            }
                        }
                    }
                    shared.stats.record_cycle(start.elapsed().as_nanos() as u64);
                }
            })?;
        Ok(LightThread {
            handle: Some(handle),
            stop,
        })
    }

    /// Asks the thread to stop and waits for it (at most about one period).
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for LightThread {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Moves the calling thread to SCHED_FIFO, or says once why it cannot.
fn set_realtime(priority: u8, stats: &LightStats) {
    if priority == 0 {
        tracing::info!("light detector runs at normal priority (light.realtime_priority = 0)");
        return;
    }
    match selfheal_sys::sched::set_fifo(0, i32::from(priority)) {
        Ok(()) => {
            stats.realtime.store(true, Ordering::Relaxed);
            tracing::info!("light detector runs under SCHED_FIFO priority {priority}");
        }
        Err(e) => {
            tracing::warn!(
                "light detector runs at normal priority: cannot switch to SCHED_FIFO {priority} ({e}). \
                 Run as root or grant CAP_SYS_NICE (systemd: AmbientCapabilities=CAP_SYS_NICE) so it \
                 keeps running when normal tasks hog the CPUs."
            );
        }
    }
}
