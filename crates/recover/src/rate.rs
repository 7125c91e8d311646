//! Rate limits on recovery actions: a budget per minute for the whole
//! machine (a misdiagnosis must not become a killing spree) and a
//! cool-down per target (the same process or cgroup is not acted on again
//! right after a ladder finished with it).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Actions per minute and cool-downs.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    cooldown: Duration,
    recent: VecDeque<Instant>,
    targets: HashMap<String, Instant>,
}

impl RateLimiter {
    /// At most `per_minute` actions in any 60 s; `cooldown` per target.
    pub fn new(per_minute: u32, cooldown: Duration) -> RateLimiter {
        RateLimiter {
            per_minute,
            cooldown,
            recent: VecDeque::new(),
            targets: HashMap::new(),
        }
    }

    /// Takes one action from the budget at `now`; false when exhausted.
    pub fn take(&mut self, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(60))
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.per_minute as usize {
            return false;
        }
        self.recent.push_back(now);
        true
    }

    /// Time left in `key`'s cool-down at `now`, if any.
    pub fn cooling(&self, key: &str, now: Instant) -> Option<Duration> {
        let until = *self.targets.get(key)?;
        (until > now).then(|| until - now)
    }

    /// Starts `key`'s cool-down at `now`.
    pub fn cool(&mut self, key: &str, now: Instant) {
        self.targets.retain(|_, until| *until > now);
        self.targets.insert(key.to_string(), now + self.cooldown);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refills_after_a_minute() {
        let mut r = RateLimiter::new(2, Duration::from_secs(10));
        let t = Instant::now();
        assert!(r.take(t) && r.take(t + Duration::from_secs(1)));
        assert!(!r.take(t + Duration::from_secs(2)));
        assert!(r.take(t + Duration::from_secs(61)));
    }

    #[test]
    fn cooldown_per_target() {
        let mut r = RateLimiter::new(10, Duration::from_secs(10));
        let t = Instant::now();
        assert!(r.cooling("pid:1:2", t).is_none());
        r.cool("pid:1:2", t);
        assert_eq!(
            r.cooling("pid:1:2", t + Duration::from_secs(4)),
            Some(Duration::from_secs(6))
        );
        assert!(r.cooling("pid:1:2", t + Duration::from_secs(10)).is_none());
        assert!(r.cooling("cgroup:/x", t).is_none());
    }
}
