//! Which part of selfheal reported an event: [`Source`], stored as the
//! event's `source` string.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The prefix of a guest's event forwarded by the host (`guest:heavy`).
const GUEST_PREFIX: &str = "guest:";

/// Which part reported an event. Its name ([`Source::as_str`]) is the
/// stored `source` string, unchanged from when it was a plain string: the
/// store, the JSON event log, `/api/events` and the lab read it.
///
/// Reading never fails: a name this build does not know (an older or newer
/// selfheal, a hand-written event) is kept as [`Source::Other`], and
/// written back as it was.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// The daemon itself: start, stop, a panicked thread (`daemon`).
    Daemon,
    /// The light detector's threshold rules (`light`).
    Light,
    /// The heavy detector: diagnoses, dismissals, its own alerts (`heavy`).
    Heavy,
    /// The CPU stall detector (`stall`).
    Stall,
    /// The detector watchdog chain (`watchdog`).
    Watchdog,
    /// The kernel's own reports, read from /dev/kmsg (`kmsg`).
    Kmsg,
    /// The recovery ladder and the controlled restart (`recovery`).
    Recovery,
    /// Application supervision: `selfheal run`, `[[app]]` (`app`).
    App,
    /// The host side of `selfheal vm`, `[[vm]]` (`vm`).
    Vm,
    /// A guest's link to its host (`host_link`).
    HostLink,
    /// A guest's event as its host stores it (`guest:` and the guest's own
    /// source, `guest:heavy`).
    Guest(Box<Source>),
    /// A name this build does not know, kept as read. Never built for a
    /// known name: [`Source::from`] maps those to their variant.
    Other(String),
}

impl Source {
    /// Every source with a fixed name, in declaration order.
    pub const FIXED: &'static [Source] = &[
        Source::Daemon,
        Source::Light,
        Source::Heavy,
        Source::Stall,
        Source::Watchdog,
        Source::Kmsg,
        Source::Recovery,
        Source::App,
        Source::Vm,
        Source::HostLink,
    ];

    /// The stored name: borrowed, except for a guest's (`guest:` + its own).
    pub fn as_str(&self) -> Cow<'_, str> {
        match self {
            Source::Guest(inner) => Cow::Owned(format!("{GUEST_PREFIX}{}", inner.as_str())),
            Source::Other(name) => Cow::Borrowed(name),
            fixed => Cow::Borrowed(fixed.fixed_name().unwrap_or_default()),
        }
    }

    /// The name of a source with a fixed one (not `Guest` or `Other`).
    fn fixed_name(&self) -> Option<&'static str> {
        Some(match self {
            Source::Daemon => "daemon",
            Source::Light => "light",
            Source::Heavy => "heavy",
            Source::Stall => "stall",
            Source::Watchdog => "watchdog",
            Source::Kmsg => "kmsg",
            Source::Recovery => "recovery",
            Source::App => "app",
            Source::Vm => "vm",
            Source::HostLink => "host_link",
            Source::Guest(_) | Source::Other(_) => return None,
        })
    }

    /// The same event's source once forwarded from a guest to its host.
    pub fn forwarded_from_guest(self) -> Source {
        Source::Guest(Box::new(self))
    }

    /// True for a guest's event forwarded by its host.
    pub fn is_guest(&self) -> bool {
        matches!(self, Source::Guest(_))
    }
}

impl From<&str> for Source {
    /// The source a stored name stands for; [`Source::Other`] when unknown.
    fn from(name: &str) -> Source {
        if let Some(inner) = name.strip_prefix(GUEST_PREFIX) {
            return Source::Guest(Box::new(Source::from(inner)));
        }
        Source::FIXED
            .iter()
            .find(|s| s.fixed_name() == Some(name))
            .cloned()
            .unwrap_or_else(|| Source::Other(name.to_string()))
    }
}

impl From<String> for Source {
    fn from(name: String) -> Source {
        match Source::from(name.as_str()) {
            Source::Other(_) => Source::Other(name),
            known => known,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Guest(inner) => write!(f, "{GUEST_PREFIX}{inner}"),
            other => f.write_str(&other.as_str()),
        }
    }
}

impl Serialize for Source {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.as_str())
    }
}

impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Source, D::Error> {
        String::deserialize(deserializer).map(Source::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(s: &Source) -> String {
        serde_json::to_string(s).unwrap()
    }

    #[test]
    fn fixed_names_are_the_stored_strings() {
        let names = [
            "daemon",
            "light",
            "heavy",
            "stall",
            "watchdog",
            "kmsg",
            "recovery",
            "app",
            "vm",
            "host_link",
        ];
        assert_eq!(Source::FIXED.len(), names.len());
        for (s, name) in Source::FIXED.iter().zip(names) {
            assert_eq!(s.as_str(), name);
            assert_eq!(s.to_string(), name);
            assert_eq!(json(s), format!("\"{name}\""));
            assert_eq!(Source::from(name), *s);
            let back: Source = serde_json::from_str(&json(s)).unwrap();
            assert_eq!(back, *s);
        }
    }

    #[test]
    fn guest_sources_round_trip() {
        let g = Source::Heavy.forwarded_from_guest();
        assert!(g.is_guest() && !Source::Heavy.is_guest());
        assert_eq!(g.as_str(), "guest:heavy");
        assert_eq!(g.to_string(), "guest:heavy");
        assert_eq!(json(&g), "\"guest:heavy\"");
        assert_eq!(
            serde_json::from_str::<Source>("\"guest:heavy\"").unwrap(),
            g
        );
        // A guest that hosts a guest of its own, and a guest's unknown one.
        for name in ["guest:guest:vm", "guest:brand_new", "guest:"] {
            let s = Source::from(name);
            assert!(s.is_guest(), "{name}");
            assert_eq!(json(&s), format!("\"{name}\""));
        }
    }

    #[test]
    fn unknown_names_are_kept_as_read() {
        for name in ["placeholder", "test", "", "Heavy", "guest", "heavy "] {
            let s: Source = serde_json::from_str(&format!("\"{name}\"")).unwrap();
            assert_eq!(s, Source::Other(name.to_string()), "{name:?}");
            assert_eq!(s.as_str(), name);
            assert_eq!(json(&s), format!("\"{name}\""));
            assert_eq!(Source::from(name.to_string()), s);
        }
        assert!(serde_json::from_str::<Source>("3").is_err(), "not a string");
    }
}
