//! Parsing `--since` / `?since=`: a duration back from now (`10m`), a Unix
//! time in milliseconds, or an RFC 3339 timestamp (parsed by jiff).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A time that could not be read; the message names the input and the
/// forms accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinceError {
    /// A bare number too small to be Unix milliseconds.
    #[error("`{0}` is ambiguous: write a duration with a unit (\"10m\"), a Unix time in ms, or an RFC 3339 time")]
    Ambiguous(String),
    /// Neither a duration, nor Unix milliseconds, nor RFC 3339.
    #[error("cannot read `{0}` as a time: write a duration back from now (\"10m\", \"2h\"), a Unix time in ms, or an RFC 3339 time (\"2026-11-22T10:00:00Z\", \"2026-11-22 11:00:00+01:00\")")]
    Unreadable(String),
}

/// Parses a point in time relative to `now`.
pub fn parse_since(s: &str, now: SystemTime) -> Result<SystemTime, SinceError> {
    let t = s.trim();
    if let Ok(ms) = t.parse::<u64>() {
        // A bare number is Unix milliseconds if it looks like one, else an error.
        if ms > 1_000_000_000_000 {
            return UNIX_EPOCH
                .checked_add(Duration::from_millis(ms))
                .ok_or_else(|| SinceError::Unreadable(s.to_string()));
        }
        return Err(SinceError::Ambiguous(s.to_string()));
    }
    if let Ok(d) = selfheal_config::parse_duration(t) {
        return Ok(now.checked_sub(d).unwrap_or(UNIX_EPOCH));
    }
    // RFC 3339 with a `Z` or a numeric offset; jiff also takes a space
    // for the `T` and times without seconds.
    let ts: jiff::Timestamp = t
        .parse()
        .map_err(|_| SinceError::Unreadable(s.to_string()))?;
    Ok(SystemTime::from(ts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = |s: &str| parse_since(s, now).unwrap();
        assert_eq!(at("10m"), now - Duration::from_secs(600));
        assert_eq!(
            at("1795314322000"),
            UNIX_EPOCH + Duration::from_millis(1_795_314_322_000)
        );
        let midnight = UNIX_EPOCH + Duration::from_secs(1_795_305_600);
        assert_eq!(at("2026-11-22T00:00:00Z"), midnight);
        assert_eq!(at("2026-11-22T00:00:00+00:00"), midnight);
        assert_eq!(at("2026-11-22 00:00:00Z"), midnight);
        assert_eq!(at("2026-11-22T00:00Z"), midnight);
        assert_eq!(at("2026-11-22T01:00:00+01:00"), midnight);
        assert_eq!(at("2026-11-21T19:00:00-05:00"), midnight);
        assert_eq!(
            at("1970-01-01T00:00:01.5Z"),
            UNIX_EPOCH + Duration::from_millis(1500)
        );
        let e = parse_since("10", now).unwrap_err().to_string();
        assert!(e.contains("ambiguous"), "{e}");
        for bad in [
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-22T25:00:00Z",
            "2026-11-22",
        ] {
            let e = parse_since(bad, now).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("10m"), "{e}");
        }
    }
}
