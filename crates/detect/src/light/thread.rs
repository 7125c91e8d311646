//! The light detector's own thread: SCHED_FIFO when permitted, a fixed
//! period, no allocation and no lock after start-up, and a hand-off to the
//! heavy detector that never blocks.
//!
//! Other detectors can ride on its wake-ups with a [`SampleHook`] (the
//! stall detector arms its per-CPU canaries from each sample): a wake-up
//! costs tens of microseconds on a VM, far more than the hook's work.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use selfheal_sampler::{Sample, SampleBoard, Sampler};

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

/// Work done on the light thread, after each sample and at deadlines it
/// asks for. Runs on a real-time thread: it must not block, lock or
/// allocate.
pub trait SampleHook: Send {
    /// Called after each sample is published. Returns when to be called
    /// again before the next sample, if at all.
    fn on_sample(&mut self, sample: &Sample) -> Option<Instant>;
    /// Called at (or just after) a deadline [`SampleHook::on_sample`] or
    /// this method asked for; returns the next one, if any.
    fn on_deadline(&mut self, now: Instant) -> Option<Instant>;
}

/// Hooks waiting for the light thread that publishes to their board.
type PendingHooks = Vec<(Weak<SampleBoard>, Box<dyn SampleHook>)>;
static PENDING_HOOKS: Mutex<PendingHooks> = Mutex::new(Vec::new());

/// Queues `hook` for the next [`LightThread::spawn`] that publishes to
/// `board`. The daemon starts the hang pipeline (which attaches the stall
/// detector's hook) before the light thread, and both get the same board,
/// so neither needs to know about the other.
pub fn attach_sample_hook(board: &Arc<SampleBoard>, hook: Box<dyn SampleHook>) {
    let mut pending = PENDING_HOOKS.lock().unwrap_or_else(|p| p.into_inner());
    pending.retain(|(b, _)| b.strong_count() > 0);
    pending.push((Arc::downgrade(board), hook));
}

/// Takes the hooks queued for `board`.
fn take_hooks(board: &Arc<SampleBoard>) -> Vec<Box<dyn SampleHook>> {
    let mut pending = PENDING_HOOKS.lock().unwrap_or_else(|p| p.into_inner());
    let (mine, rest): (PendingHooks, PendingHooks) = pending
        .drain(..)
        .partition(|(b, _)| std::ptr::eq(b.as_ptr(), Arc::as_ptr(board)));
    *pending = rest
        .into_iter()
        .filter(|(b, _)| b.strong_count() > 0)
        .collect();
    mine.into_iter().map(|(_, h)| h).collect()
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl LightThread {
    /// Starts the thread. Alerts go to `alerts` with `try_send`: when the
    /// queue is full they are dropped and counted, never waited for. Hooks
    /// attached to `shared.board` ([`attach_sample_hook`]) run on it.
    pub fn spawn(
        config: LightThreadConfig,
        sampler: Sampler,
        detector: LightDetector,
        shared: LightShared,
        alerts: SyncSender<Alert>,
    ) -> std::io::Result<LightThread> {
        let hooks = take_hooks(&shared.board);
        LightThread::spawn_with_hooks(config, sampler, detector, shared, alerts, hooks)
    }

    /// [`LightThread::spawn`] with explicit hooks (and none attached).
    pub fn spawn_with_hooks(
        config: LightThreadConfig,
        mut sampler: Sampler,
        mut detector: LightDetector,
        shared: LightShared,
        alerts: SyncSender<Alert>,
        mut hooks: Vec<Box<dyn SampleHook>>,
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
                let mut hook_due: Option<Instant> = None;
                while !stop2.load(Ordering::Relaxed) {
                    // A hook's deadline before the next sample: serve it
                    // (atomics only, no sampling) and wait again.
                    if let Some(due) = hook_due.take().filter(|d| *d < next) {
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        let now = Instant::now();
                        for h in hooks.iter_mut() {
                            hook_due = earliest(hook_due, h.on_deadline(now));
                        }
                        continue;
                    }
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
                            // After an idle read the board keeps the last
                            // /proc/stat sample (at most 2 x `slow_every`
                            // - 1 periods old, with every CPU idle since):
                            // readers want shares, not bounds. The rules
                            // skip it too; the hooks (the canaries'
                            // arming) take its idle bounds.
                            if sample.stat_read {
                                shared.board.publish(&sample);
                            }
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
                            for h in hooks.iter_mut() {
                                hook_due = earliest(hook_due, h.on_sample(&sample));
                            }
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
