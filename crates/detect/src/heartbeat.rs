//! A lock-free heartbeat: the light thread stamps it every period; watchers
//! (the HTTP health check, sd_notify WATCHDOG=1, the watchdog chain) read its
//! age.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Monotonic time of the last beat, as nanoseconds since a base instant.
#[derive(Debug)]
pub struct Heartbeat {
    base: Instant,
    last_ns: AtomicU64,
    beats: AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat::new()
    }
}

impl Heartbeat {
    /// A heartbeat that has never beaten.
    pub fn new() -> Heartbeat {
        Heartbeat {
            base: Instant::now(),
            last_ns: AtomicU64::new(0),
            beats: AtomicU64::new(0),
        }
    }

    /// Records a beat now.
    pub fn beat(&self) {
        let ns = self.base.elapsed().as_nanos() as u64;
        self.last_ns.store(ns.max(1), Ordering::Release);
        self.beats.fetch_add(1, Ordering::Relaxed);
    }

    /// Time since the last beat; `None` before the first one.
    pub fn age(&self) -> Option<Duration> {
        let last = self.last_ns.load(Ordering::Acquire);
        if last == 0 {
            return None;
        }
        let now = self.base.elapsed().as_nanos() as u64;
        Some(Duration::from_nanos(now.saturating_sub(last)))
    }

    /// Number of beats so far.
    pub fn beats(&self) -> u64 {
        self.beats.load(Ordering::Relaxed)
    }

    /// True when a beat happened within `max_age`.
    pub fn is_fresh(&self, max_age: Duration) -> bool {
        self.age().is_some_and(|a| a <= max_age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        let h = Heartbeat::new();
        assert_eq!(h.age(), None);
        assert!(!h.is_fresh(Duration::from_secs(10)));
        h.beat();
        assert!(h.is_fresh(Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(20));
        assert!(h.age().unwrap() >= Duration::from_millis(20));
        assert!(!h.is_fresh(Duration::from_millis(5)));
        assert_eq!(h.beats(), 1);
    }
}
