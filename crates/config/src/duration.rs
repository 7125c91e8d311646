//! Durations written as text: `"100ms"`, `"2s"`, `"1m30s"`, `"30d"`.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::invalid::DurationError;

/// A `std::time::Duration` read from and written as human-readable text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// From milliseconds.
    pub const fn from_millis(ms: u64) -> HumanDuration {
        HumanDuration(Duration::from_millis(ms))
    }

    /// From seconds.
    pub const fn from_secs(s: u64) -> HumanDuration {
        HumanDuration(Duration::from_secs(s))
    }

    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// The longest duration accepted anywhere (10 years): far beyond any
/// sensible timeout or retention, and far below what would overflow a
/// deadline (`Instant + d`) or a doubling backoff.
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);

/// Parses a duration the way the config and the CLI accept it: a number
/// with a unit (humantime's syntax), at most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let d = humantime::parse_duration(t).map_err(|source| DurationError::Malformed {
        input: s.to_string(),
        source,
    })?;
    if d > MAX_DURATION {
        return Err(DurationError::TooLong {
            input: s.to_string(),
        });
    }
    Ok(d)
}

impl std::str::FromStr for HumanDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(HumanDuration)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string like \"100ms\" or \"2s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                parse_duration(v).map(HumanDuration).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                if v == 0 {
                    Ok(HumanDuration(Duration::ZERO))
                } else {
                    Err(E::custom(format!(
                        "a bare number `{v}` is ambiguous; write it with a unit, like \"{v}ms\" or \"{v}s\""
                    )))
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        let e = parse_duration("10").unwrap_err();
        assert!(matches!(e, DurationError::Malformed { .. }), "{e:?}");
        assert!(e.to_string().contains("100ms") && std::error::Error::source(&e).is_some());
        assert_eq!(HumanDuration::from_millis(1500).to_string(), "1s 500ms");
        assert_eq!(parse_duration("3650d").unwrap(), MAX_DURATION);
        for huge in ["3651d", "18446744073709551615s", "99999999999999h"] {
            let e = parse_duration(huge).unwrap_err().to_string();
            assert!(e.contains(huge) && e.contains("3650d"), "{e}");
        }
    }
}
