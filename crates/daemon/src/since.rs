//! Parsing `--since` / `?since=`: a duration back from now (`10m`), a Unix
//! time in milliseconds, or an RFC 3339 timestamp.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parses a point in time relative to `now`.
pub fn parse_since(s: &str, now: SystemTime) -> Result<SystemTime, String> {
    let t = s.trim();
    if let Ok(ms) = t.parse::<u64>() {
        // A bare number is Unix milliseconds if it looks like one, else an error.
        if ms > 1_000_000_000_000 {
            return Ok(UNIX_EPOCH + Duration::from_millis(ms));
        }
        return Err(format!(
            "`{s}` is ambiguous: write a duration with a unit (\"10m\"), a Unix time in ms, or an RFC 3339 time"
        ));
    }
    if let Ok(d) = selfheal_config::parse_duration(t) {
        return Ok(now.checked_sub(d).unwrap_or(UNIX_EPOCH));
    }
    humantime_rfc3339(t).ok_or_else(|| {
        format!(
            "cannot read `{s}` as a time: write a duration back from now (\"10m\", \"2h\"), a Unix time in ms, or an RFC 3339 time (\"2026-11-22T10:00:00Z\")"
        )
    })
}

fn humantime_rfc3339(s: &str) -> Option<SystemTime> {
    // RFC 3339 in UTC ("Z"), with optional fractional seconds.
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00"))?;
    let (date, time) = s.split_once(['T', ' '])?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi, se) = (t.next()??, t.next()??, t.next().flatten().unwrap_or(0));
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let days = days_from_civil(y, mo, da);
    let secs = days * 86_400 + h * 3600 + mi * 60 + se;
    let nanos = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(9).collect();
        digits.parse::<u64>().ok()? * 10u64.pow(9 - digits.len() as u32)
    };
    (secs >= 0).then(|| UNIX_EPOCH + Duration::new(secs as u64, nanos as u32))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(
            parse_since("10m", now).unwrap(),
            now - Duration::from_secs(600)
        );
        assert_eq!(
            parse_since("1795314322000", now).unwrap(),
            UNIX_EPOCH + Duration::from_millis(1_795_314_322_000)
        );
        assert_eq!(
            parse_since("2026-11-22T00:00:00Z", now).unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_795_305_600)
        );
        assert_eq!(
            parse_since("1970-01-01T00:00:01.5Z", now).unwrap(),
            UNIX_EPOCH + Duration::from_millis(1500)
        );
        assert!(parse_since("10", now).unwrap_err().contains("ambiguous"));
        assert!(parse_since("yesterday", now).unwrap_err().contains("10m"));
    }
}
