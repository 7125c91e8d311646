//! The watchdog chain (SHFH's timer): detectors stamp heartbeats; a watcher
//! thread escalates when one misses N of its periods (the light detector
//! itself starved, a canary CPU gone, the hang pipeline stuck).
//!
//! The chain is healthy while every heartbeat is fresh. Health is computed
//! when asked, from the heartbeats themselves, so a starved watcher cannot
//! report stale good news: the daemon sends systemd `WATCHDOG=1` only while
//! [`ChainHealth::is_healthy`] holds, and the watcher pets a hardware
//! watchdog device only while it does. If everything stops, the device
//! resets the machine: the last line of defence.
//!
//! The watcher wakes when the first heartbeat could go stale (about once a
//! second with the defaults), or every `period` while one is stale or a
//! device needs petting.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use selfheal_sys::SysError;

use crate::heartbeat::Heartbeat;

/// Whose heartbeat the chain watches: a detector of the hang path, or the
/// chain's own watcher. Its [`Detector::as_str`] name is stable: watchdog
/// events (`details.component`), heavy-run evidence
/// (`trigger.component`), the `component` metric label and `/healthz`
/// carry it; serde writes and reads the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// The light detector's sampling thread (`light`).
    Light,
    /// The stall detector's per-CPU canaries (`stall`).
    Stall,
    /// The hang pipeline's worker: heavy detector and recovery (`pipeline`).
    Pipeline,
    /// The watchdog chain's own watcher thread (`watcher`).
    Watcher,
}

impl Detector {
    /// Every detector, in declaration order.
    pub const ALL: &'static [Detector] = &[
        Detector::Light,
        Detector::Stall,
        Detector::Pipeline,
        Detector::Watcher,
    ];

    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Detector::Light => "light",
            Detector::Stall => "stall",
            Detector::Pipeline => "pipeline",
            Detector::Watcher => "watcher",
        }
    }
}

impl fmt::Display for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A heartbeat the chain watches.
#[derive(Debug, Clone)]
pub struct Watched {
    /// Whose heartbeat it is (its name in events and metrics).
    pub name: Detector,
    /// The heartbeat.
    pub heartbeat: Arc<Heartbeat>,
    /// Older than this means missed.
    pub max_age: Duration,
}

/// A chain transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchdogEvent {
    /// A heartbeat went stale.
    Missed {
        /// Which one.
        component: Detector,
        /// Its age (`None`: it never beat).
        age: Option<Duration>,
        /// The limit it exceeded.
        max_age: Duration,
    },
    /// It beats again.
    Recovered {
        /// Which one.
        component: Detector,
        /// How long it was stale.
        after: Duration,
    },
    /// Petting the hardware watchdog failed.
    DeviceError {
        /// What failed.
        message: String,
    },
}

/// Something to pet: a hardware watchdog device, or a test fake.
pub trait Petter: Send {
    /// Restarts the device's countdown.
    fn pet(&mut self) -> Result<(), SysError>;
    /// Disarms it on a clean shutdown.
    fn disarm(self: Box<Self>) -> Result<(), SysError>;
}

impl Petter for selfheal_sys::watchdog_dev::WatchdogDevice {
    fn pet(&mut self) -> Result<(), SysError> {
        self.keepalive()
    }

    fn disarm(self: Box<Self>) -> Result<(), SysError> {
        selfheal_sys::watchdog_dev::WatchdogDevice::disarm(*self)
    }
}

/// Health of the chain, readable from any thread.
#[derive(Debug)]
pub struct ChainHealth {
    watched: Vec<Watched>,
    /// The watcher's own heartbeat.
    pub watcher: Heartbeat,
    watcher_max_age: Duration,
    /// Missed-heartbeat episodes so far.
    pub misses: AtomicU64,
    /// Hardware watchdog pets so far.
    pub pets: AtomicU64,
    /// A hardware watchdog is being petted.
    pub device: AtomicBool,
}

impl ChainHealth {
    /// True while every heartbeat (the watcher's included) is fresh.
    pub fn is_healthy(&self) -> bool {
        self.watcher.is_fresh(self.watcher_max_age)
            && self.watched.iter().all(|w| w.heartbeat.is_fresh(w.max_age))
    }

    /// Each component's heartbeat age and limit.
    pub fn components(&self) -> Vec<(Detector, Option<Duration>, Duration)> {
        let mut v: Vec<_> = self
            .watched
            .iter()
            .map(|w| (w.name, w.heartbeat.age(), w.max_age))
            .collect();
        v.push((Detector::Watcher, self.watcher.age(), self.watcher_max_age));
        v
    }
}

/// How the watcher runs.
#[derive(Debug, Clone)]
pub struct WatchdogOptions {
    /// How often the watcher checks.
    pub period: Duration,
    /// SCHED_FIFO priority of the watcher (0 = normal).
    pub realtime_priority: u8,
    /// Grace after start before a heartbeat that never beat counts as missed.
    pub startup_grace: Duration,
    /// While set, the device is not petted even when every heartbeat is
    /// fresh: the controlled restart's last method, letting the hardware
    /// watchdog reset the machine.
    pub starve: Arc<AtomicBool>,
}

/// The running chain.
pub struct WatchdogChain {
    health: Arc<ChainHealth>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Option<Box<dyn Petter>>>>,
}

impl std::fmt::Debug for WatchdogChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchdogChain")
            .field("healthy", &self.health.is_healthy())
            .finish_non_exhaustive()
    }
}

impl WatchdogChain {
    /// Starts the watcher. `device`, when given, is petted every period
    /// while the chain is healthy and disarmed on [`WatchdogChain::stop`].
    pub fn spawn(
        options: WatchdogOptions,
        watched: Vec<Watched>,
        device: Option<Box<dyn Petter>>,
        on_event: Arc<dyn Fn(WatchdogEvent) + Send + Sync>,
    ) -> std::io::Result<WatchdogChain> {
        let health = Arc::new(ChainHealth {
            watched,
            watcher: Heartbeat::new(),
            watcher_max_age: (options.period * 10).max(Duration::from_secs(2)),
            misses: AtomicU64::new(0),
            pets: AtomicU64::new(0),
            device: AtomicBool::new(device.is_some()),
        });
        health.watcher.beat();
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (health.clone(), stop.clone());
        let handle = std::thread::Builder::new()
            .name("selfheal-watchdog".into())
            .stack_size(64 * 1024)
            .spawn(move || watch(&h, &s, device, on_event.as_ref(), &options))?;
        Ok(WatchdogChain {
            health,
            stop,
            handle: Some(handle),
        })
    }

    /// The chain's health (cheap; computed from the heartbeats).
    pub fn health(&self) -> Arc<ChainHealth> {
        self.health.clone()
    }

    /// True while every heartbeat is fresh.
    pub fn is_healthy(&self) -> bool {
        self.health.is_healthy()
    }

    /// Stops the watcher and disarms the device (magic close).
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            if let Ok(Some(dev)) = h.join() {
                if let Err(e) = dev.disarm() {
                    tracing::error!(
                        "disarming the hardware watchdog failed: {e}; the machine may reset"
                    );
                }
            }
        }
    }
}

impl Drop for WatchdogChain {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn watch(
    health: &ChainHealth,
    stop: &AtomicBool,
    mut device: Option<Box<dyn Petter>>,
    on_event: &(dyn Fn(WatchdogEvent) + Send + Sync),
    options: &WatchdogOptions,
) -> Option<Box<dyn Petter>> {
    if options.realtime_priority > 0 {
        if let Err(e) = selfheal_sys::sched::set_fifo(0, i32::from(options.realtime_priority)) {
            tracing::warn!("watchdog chain runs at normal priority: {e}");
        }
    }
    let start = Instant::now();
    let mut stale_since: Vec<Option<Instant>> = vec![None; health.watched.len()];
    let mut device_failed = false;
    while !stop.load(Ordering::Relaxed) {
        health.watcher.beat();
        let in_grace = start.elapsed() < options.startup_grace;
        for (w, since) in health.watched.iter().zip(stale_since.iter_mut()) {
            let age = w.heartbeat.age();
            let fresh = age.is_some_and(|a| a <= w.max_age) || (age.is_none() && in_grace);
            match (fresh, *since) {
                (false, None) => {
                    *since = Some(Instant::now());
                    health.misses.fetch_add(1, Ordering::Relaxed);
                    on_event(WatchdogEvent::Missed {
                        component: w.name,
                        age,
                        max_age: w.max_age,
                    });
                }
                (true, Some(t)) => {
                    *since = None;
                    on_event(WatchdogEvent::Recovered {
                        component: w.name,
                        after: t.elapsed(),
                    });
                }
                _ => {}
            }
        }
        let healthy = stale_since.iter().all(Option::is_none);
        let petting = device.is_some();
        let starved = options.starve.load(Ordering::Relaxed);
        if let (Some(dev), true) = (device.as_mut(), healthy && !starved) {
            match dev.pet() {
                Ok(()) => {
                    health.pets.fetch_add(1, Ordering::Relaxed);
                    device_failed = false;
                }
                Err(e) if !device_failed => {
                    device_failed = true;
                    on_event(WatchdogEvent::DeviceError {
                        message: e.to_string(),
                    });
                }
                Err(_) => {}
            }
        }
        // Parked until stopped (unpark) or the next check is due.
        std::thread::park_timeout(next_check(
            health,
            options,
            healthy && !in_grace && !petting,
        ));
    }
    device
}

/// How long the watcher may sleep. While everything is fresh and no device
/// needs petting, it wakes just after the first heartbeat could go stale
/// (a stale one is then seen at its limit, not up to a period later, and
/// the watcher wakes about once a second instead of every period); while
/// a heartbeat is stale, a device is petted or heartbeats may not have
/// begun yet, every `period`.
fn next_check(health: &ChainHealth, options: &WatchdogOptions, all_fresh: bool) -> Duration {
    if !all_fresh {
        return options.period;
    }
    let soonest = health
        .watched
        .iter()
        .filter_map(|w| w.heartbeat.age().map(|a| w.max_age.saturating_sub(a)))
        .min()
        .unwrap_or(options.period);
    // Keep the watcher's own heartbeat fresh too.
    (soonest + Duration::from_millis(1))
        .clamp(Duration::from_millis(10), health.watcher_max_age / 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct FakeDevice {
        pets: Arc<AtomicU64>,
        disarmed: Arc<AtomicBool>,
    }

    impl Petter for FakeDevice {
        fn pet(&mut self) -> Result<(), SysError> {
            self.pets.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        fn disarm(self: Box<Self>) -> Result<(), SysError> {
            self.disarmed.store(true, Ordering::Relaxed);
            Ok(())
        }
    }

    fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        cond()
    }

    #[test]
    fn a_starved_heartbeat_escalates_and_stops_the_petting() {
        let light = Arc::new(Heartbeat::new());
        let pets = Arc::new(AtomicU64::new(0));
        let disarmed = Arc::new(AtomicBool::new(false));
        let events: Arc<Mutex<Vec<WatchdogEvent>>> = Arc::default();
        let e2 = events.clone();
        light.beat();
        let chain = WatchdogChain::spawn(
            WatchdogOptions {
                period: Duration::from_millis(10),
                realtime_priority: 0,
                startup_grace: Duration::ZERO,
                starve: Arc::default(),
            },
            vec![Watched {
                name: Detector::Light,
                heartbeat: light.clone(),
                max_age: Duration::from_millis(150),
            }],
            Some(Box::new(FakeDevice {
                pets: pets.clone(),
                disarmed: disarmed.clone(),
            })),
            Arc::new(move |e| e2.lock().unwrap().push(e)),
        )
        .unwrap();
        // Beating: healthy, petted.
        let beater_stop = Arc::new(AtomicBool::new(false));
        let beater = {
            let (l, s) = (light.clone(), beater_stop.clone());
            std::thread::spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    l.beat();
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        assert!(wait_for(Duration::from_secs(5), || pets
            .load(Ordering::Relaxed)
            >= 5));
        assert!(chain.is_healthy());
        // The light detector starves.
        beater_stop.store(true, Ordering::Relaxed);
        beater.join().unwrap();
        assert!(wait_for(Duration::from_secs(5), || !events
            .lock()
            .unwrap()
            .is_empty()));
        assert!(!chain.is_healthy());
        let frozen = pets.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            pets.load(Ordering::Relaxed),
            frozen,
            "petted while unhealthy"
        );
        // It comes back.
        light.beat();
        assert!(wait_for(Duration::from_secs(5), || events
            .lock()
            .unwrap()
            .len()
            >= 2));
        chain.stop();
        assert!(disarmed.load(Ordering::Relaxed));
        let ev = events.lock().unwrap().clone();
        assert!(matches!(
            ev[0],
            WatchdogEvent::Missed {
                component: Detector::Light,
                ..
            }
        ));
        assert!(matches!(
            ev[1],
            WatchdogEvent::Recovered {
                component: Detector::Light,
                ..
            }
        ));
    }

    /// The controlled restart's `watchdog` method: petting stops while the
    /// chain is healthy, so the device resets the machine.
    #[test]
    fn a_starve_request_stops_the_petting_of_a_healthy_chain() {
        let light = Arc::new(Heartbeat::new());
        let pets = Arc::new(AtomicU64::new(0));
        let starve = Arc::new(AtomicBool::new(false));
        let chain = WatchdogChain::spawn(
            WatchdogOptions {
                period: Duration::from_millis(10),
                realtime_priority: 0,
                startup_grace: Duration::ZERO,
                starve: starve.clone(),
            },
            vec![Watched {
                name: Detector::Light,
                heartbeat: light.clone(),
                max_age: Duration::from_secs(60),
            }],
            Some(Box::new(FakeDevice {
                pets: pets.clone(),
                disarmed: Arc::default(),
            })),
            Arc::new(|_| {}),
        )
        .unwrap();
        light.beat();
        assert!(wait_for(Duration::from_secs(5), || pets
            .load(Ordering::Relaxed)
            >= 3));
        starve.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
        let frozen = pets.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(150));
        assert!(chain.is_healthy(), "the chain itself is fine");
        assert_eq!(pets.load(Ordering::Relaxed), frozen, "petted while starved");
        chain.stop();
    }

    #[test]
    fn a_stale_heartbeat_is_seen_at_its_limit_not_a_period_later() {
        let hb = Arc::new(Heartbeat::new());
        let events: Arc<Mutex<Vec<(Instant, WatchdogEvent)>>> = Arc::default();
        let e2 = events.clone();
        hb.beat();
        let beat_at = Instant::now();
        // A long period: without deadlines the miss would wait for it.
        let chain = WatchdogChain::spawn(
            WatchdogOptions {
                period: Duration::from_secs(3),
                realtime_priority: 0,
                startup_grace: Duration::ZERO,
                starve: Arc::default(),
            },
            vec![Watched {
                name: Detector::Light,
                heartbeat: hb.clone(),
                max_age: Duration::from_millis(200),
            }],
            None,
            Arc::new(move |e| e2.lock().unwrap().push((Instant::now(), e))),
        )
        .unwrap();
        assert!(wait_for(Duration::from_secs(5), || !events
            .lock()
            .unwrap()
            .is_empty()));
        let (at, ev) = events.lock().unwrap()[0].clone();
        assert!(matches!(
            ev,
            WatchdogEvent::Missed {
                component: Detector::Light,
                ..
            }
        ));
        let after = at - beat_at;
        // Generous upper bound: the test machine is shared.
        assert!(
            after >= Duration::from_millis(200) && after < Duration::from_millis(1500),
            "missed {after:?} after the last beat"
        );
        // Stopping does not wait for the watcher's sleep to end.
        let t = Instant::now();
        chain.stop();
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }

    #[test]
    fn health_is_computed_from_heartbeats_not_the_watcher() {
        let hb = Arc::new(Heartbeat::new());
        hb.beat();
        let h = ChainHealth {
            watched: vec![Watched {
                name: Detector::Pipeline,
                heartbeat: hb.clone(),
                max_age: Duration::from_millis(50),
            }],
            watcher: Heartbeat::new(),
            watcher_max_age: Duration::from_secs(1),
            misses: AtomicU64::new(0),
            pets: AtomicU64::new(0),
            device: AtomicBool::new(false),
        };
        // The watcher never ran: not healthy, whatever the others say.
        assert!(!h.is_healthy());
        h.watcher.beat();
        assert!(h.is_healthy());
        std::thread::sleep(Duration::from_millis(80));
        assert!(!h.is_healthy());
        assert_eq!(h.components().len(), 2);
        assert_eq!(h.components()[1].0, Detector::Watcher);
    }

    #[test]
    fn detector_names_are_stable() {
        let names: Vec<String> = Detector::ALL.iter().map(|d| d.to_string()).collect();
        assert_eq!(names, ["light", "stall", "pipeline", "watcher"]);
        assert!(Detector::ALL.iter().all(|d| d.to_string() == d.as_str()));
    }
}
