//! Building the `app_*` events.

use std::time::{Instant, SystemTime};

use serde_json::Value;

use selfheal_event::{unix_ms, Culprit, Event, EventKind, Severity, Source};

/// An app event with the app (and pid, when running) as culprit.
pub fn app_event(
    kind: EventKind,
    severity: Severity,
    app: &str,
    pid: Option<i32>,
    message: String,
    details: Value,
) -> Event {
    Event::now(kind, severity, Source::App, message)
        .with_culprit(Culprit {
            app: Some(app.to_string()),
            pid,
            ..Culprit::default()
        })
        .with_details(details)
}

/// Wall-clock microseconds since the Unix epoch of a monotonic instant
/// (for evidence that benchmarks and operators line up with other clocks).
pub fn unix_us(t: Instant) -> i64 {
    let now = Instant::now();
    let wall = SystemTime::now();
    let wall_us = unix_ms(wall) * 1000
        + i64::from(
            wall.duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.subsec_micros() % 1000)
                .unwrap_or(0),
        );
    if t <= now {
        wall_us - now.duration_since(t).as_micros() as i64
    } else {
        wall_us + t.duration_since(now).as_micros() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn unix_us_tracks_the_wall_clock() {
        let now_us = unix_ms(SystemTime::now()) * 1000;
        let t = unix_us(Instant::now());
        assert!((t - now_us).abs() < 50_000, "{t} vs {now_us}");
        let earlier = unix_us(Instant::now() - Duration::from_millis(200));
        assert!(t - earlier >= 190_000, "{}", t - earlier);
    }
}
