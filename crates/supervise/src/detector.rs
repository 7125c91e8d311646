//! Which hang detector of an app fired: [`HangDetector`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::progress::SuspicionKind;

/// One of an app's hang detectors. Its name ([`HangDetector::as_str`],
/// also its serde form) is stable: `details.detector` of `app_hang`
/// events, the `detector` label of `selfheal_app_hangs_total` and
/// `selfheal_app_suspected_hangs_total`, `/api/apps`' `hangs` and
/// `suspected`, and the hook's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HangDetector {
    /// `WATCHDOG=1` stopped arriving (or the program sent
    /// `WATCHDOG=trigger`).
    Watchdog,
    /// No `READY=1` within `notify.ready_timeout`.
    ReadyTimeout,
    /// A probe failed `failure_threshold` times in a row.
    Probe,
    /// A thread spins on CPU without system calls (no-progress heuristic).
    Spin,
    /// Every thread is blocked with no CPU time (no-progress heuristic).
    Deadlock,
}

impl HangDetector {
    /// Every detector, in the order their counters are kept.
    pub const ALL: [HangDetector; 5] = [
        HangDetector::Watchdog,
        HangDetector::ReadyTimeout,
        HangDetector::Probe,
        HangDetector::Spin,
        HangDetector::Deadlock,
    ];

    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            HangDetector::Watchdog => "watchdog",
            HangDetector::ReadyTimeout => "ready_timeout",
            HangDetector::Probe => "probe",
            HangDetector::Spin => "spin",
            HangDetector::Deadlock => "deadlock",
        }
    }

    /// Its index in [`HangDetector::ALL`] (for counters).
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for HangDetector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<SuspicionKind> for HangDetector {
    fn from(kind: SuspicionKind) -> Self {
        match kind {
            SuspicionKind::Spin => HangDetector::Spin,
            SuspicionKind::Deadlock => HangDetector::Deadlock,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names are the ones docs/supervise.md gives for the `detector`
    /// label (and stored events carry): `watchdog`, `ready_timeout`,
    /// `probe`, `spin`, `deadlock`, in that order; serde writes and
    /// reads the same names.
    #[test]
    fn names_are_the_documented_labels() {
        let names: Vec<&str> = HangDetector::ALL.iter().map(|d| d.as_str()).collect();
        assert_eq!(
            names,
            ["watchdog", "ready_timeout", "probe", "spin", "deadlock"]
        );
        let doc = include_str!("../../../docs/supervise.md").replace('\n', " ");
        let listed: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
        let want = format!("with a `detector` label ({})", listed.join(", "));
        assert!(
            doc.contains(&want),
            "docs/supervise.md should say {want:?}, as the code names them"
        );
        for (i, d) in HangDetector::ALL.iter().enumerate() {
            assert_eq!(d.index(), i);
            assert_eq!(d.to_string(), d.as_str());
            let json = serde_json::to_string(d).unwrap();
            assert_eq!(json, format!("\"{}\"", d.as_str()));
            assert_eq!(serde_json::from_str::<HangDetector>(&json).unwrap(), *d);
        }
        assert_eq!(HangDetector::from(SuspicionKind::Spin), HangDetector::Spin);
        assert_eq!(
            HangDetector::from(SuspicionKind::Deadlock),
            HangDetector::Deadlock
        );
    }
}
