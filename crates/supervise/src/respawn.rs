//! When to start a supervised program again: the restart policy,
//! exponential backoff with a cap, and the crash-loop breaker. Pure: time
//! is passed in. (Not `restart`: in `config` and `recover` that is the
//! machine's controlled restart.)

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use selfheal_config::{BackoffConfig, CrashLoopConfig, RestartPolicy};

/// Why the program is no longer running (`cause` of `app_restart`, by
/// its snake_case name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndCause {
    /// It exited with status 0 on its own.
    CleanExit,
    /// It exited non-zero or a signal killed it, on its own.
    Crash,
    /// The supervisor stopped it because it hung.
    Hang,
    /// The supervisor was asked to stop it (shutdown, a forwarded SIGTERM).
    Requested,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start it again after `delay`; `attempt` counts restarts since it was
    /// last healthy.
    Restart {
        /// The backoff delay.
        delay: Duration,
        /// 1 for the first restart after a healthy period.
        attempt: u32,
    },
    /// Supervision ends: the policy says so.
    Finish,
    /// The crash-loop breaker tripped.
    GiveUp {
        /// Restarts within the window.
        restarts: u32,
    },
}

/// Restart bookkeeping for one app.
#[derive(Debug, Clone)]
pub struct RestartTracker {
    policy: RestartPolicy,
    backoff: BackoffConfig,
    breaker: CrashLoopConfig,
    restarts: VecDeque<Instant>,
    failures: u32,
}

impl RestartTracker {
    /// A tracker with nothing recorded.
    pub fn new(policy: RestartPolicy, backoff: &BackoffConfig, breaker: &CrashLoopConfig) -> Self {
        RestartTracker {
            policy,
            backoff: backoff.clone(),
            breaker: breaker.clone(),
            restarts: VecDeque::new(),
            failures: 0,
        }
    }

    /// Decides what follows an end at `now`, and records the restart if
    /// there is one.
    pub fn decide(&mut self, cause: EndCause, now: Instant) -> Decision {
        let restart = !matches!(
            (cause, self.policy),
            (EndCause::Requested, _)
                | (_, RestartPolicy::Never)
                | (EndCause::CleanExit, RestartPolicy::OnFailure)
        );
        if !restart {
            return Decision::Finish;
        }
        let window = self.breaker.window.get();
        while self
            .restarts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            self.restarts.pop_front();
        }
        let max = self.breaker.max_restarts;
        if max > 0 && self.restarts.len() as u32 >= max {
            return Decision::GiveUp {
                restarts: self.restarts.len() as u32,
            };
        }
        if cause == EndCause::CleanExit {
            // A clean exit under `always` restarts promptly, not later and
            // later; only failures grow the delay.
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
        }
        self.restarts.push_back(now);
        Decision::Restart {
            delay: self.delay(),
            attempt: self.restarts.len() as u32,
        }
    }

    /// The backoff for the current failure count.
    fn delay(&self) -> Duration {
        let initial = self.backoff.initial.get().as_secs_f64();
        let max = self.backoff.max.get().as_secs_f64();
        let exp = self.failures.saturating_sub(1).min(1000) as i32;
        let d = initial * self.backoff.multiplier.powi(exp);
        Duration::from_secs_f64(if d.is_finite() { d.min(max) } else { max }.max(0.0))
    }

    /// The program has run long enough to count as healthy: forget past
    /// restarts and failures.
    pub fn healthy(&mut self) {
        self.restarts.clear();
        self.failures = 0;
    }

    /// Restarts within the window (as of the last decision).
    pub fn recent_restarts(&self) -> u32 {
        self.restarts.len() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfheal_config::HumanDuration;

    fn tracker(policy: RestartPolicy, max: u32) -> RestartTracker {
        RestartTracker::new(
            policy,
            &BackoffConfig {
                initial: HumanDuration::from_millis(100),
                max: HumanDuration::from_millis(500),
                multiplier: 2.0,
            },
            &CrashLoopConfig {
                max_restarts: max,
                window: HumanDuration::from_secs(10),
                ..CrashLoopConfig::default()
            },
        )
    }

    fn delay(d: Decision) -> u128 {
        match d {
            Decision::Restart { delay, .. } => delay.as_millis(),
            other => panic!("expected a restart, got {other:?}"),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut t = tracker(RestartPolicy::OnFailure, 0);
        let now = Instant::now();
        let ds: Vec<u128> = (0..6)
            .map(|_| delay(t.decide(EndCause::Crash, now)))
            .collect();
        assert_eq!(ds, vec![100, 200, 400, 500, 500, 500]);
        t.healthy();
        assert_eq!(delay(t.decide(EndCause::Hang, now)), 100);
    }

    #[test]
    fn policies() {
        let now = Instant::now();
        let mut never = tracker(RestartPolicy::Never, 5);
        assert_eq!(never.decide(EndCause::Crash, now), Decision::Finish);
        let mut on_failure = tracker(RestartPolicy::OnFailure, 5);
        assert_eq!(
            on_failure.decide(EndCause::CleanExit, now),
            Decision::Finish
        );
        assert_eq!(
            on_failure.decide(EndCause::Requested, now),
            Decision::Finish
        );
        assert!(matches!(
            on_failure.decide(EndCause::Hang, now),
            Decision::Restart { .. }
        ));
        let mut always = tracker(RestartPolicy::Always, 5);
        assert_eq!(delay(always.decide(EndCause::CleanExit, now)), 100);
        assert_eq!(delay(always.decide(EndCause::CleanExit, now)), 100);
        assert_eq!(always.decide(EndCause::Requested, now), Decision::Finish);
    }

    #[test]
    fn breaker_trips_within_the_window_only() {
        let mut t = tracker(RestartPolicy::OnFailure, 3);
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(matches!(
                t.decide(EndCause::Crash, t0 + Duration::from_secs(i)),
                Decision::Restart { attempt, .. } if attempt == i as u32 + 1
            ));
        }
        assert_eq!(
            t.decide(EndCause::Crash, t0 + Duration::from_secs(3)),
            Decision::GiveUp { restarts: 3 }
        );
        // Spread out over more than the window, the same crashes are fine.
        let mut slow = tracker(RestartPolicy::OnFailure, 3);
        for i in 0..10 {
            assert!(matches!(
                slow.decide(EndCause::Crash, t0 + Duration::from_secs(4 * i)),
                Decision::Restart { .. }
            ));
        }
        assert!(slow.recent_restarts() <= 3);
    }
}
