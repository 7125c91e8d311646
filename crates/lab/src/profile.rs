//! A run's profile: the kernel's detector thresholds, and who acts on a
//! hang (selfheal, the kernel's own panic settings, or nobody).
//!
//! `default` and `tight` compare detection: selfheal beside the kernel's
//! detectors, QEMU exits when the guest resets. `restart`, `kernel-panic`
//! and `none` compare healing: the guest may reboot and the lab follows it
//! into its next boot, so a run's downtime includes the restart. These
//! three share the kernel thresholds (tight) and the machine (an i6300esb
//! watchdog device and a state disk); they differ only in who acts.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::scenario::KernelDetector;

/// What one run compares. Serialized with its [`KernelProfile::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum KernelProfile {
    /// Debian's thresholds: soft lockup 20 s, hung task 120 s, RCU stall 21 s; selfheal detects.
    #[serde(rename = "default")]
    Default,
    /// The tightest thresholds: soft lockup 2 s, hung task 1 s, RCU stall 3 s; selfheal detects.
    #[serde(rename = "tight")]
    Tight,
    /// selfheal with its controlled restart enabled and the guest's
    /// watchdog device armed; tight kernel thresholds (they only report).
    #[serde(rename = "restart")]
    Restart,
    /// No selfheal: the kernel panics on its own verdicts (soft lockup,
    /// hung task, RCU stall, OOM) at tight thresholds, and reboots.
    #[serde(rename = "kernel-panic")]
    KernelPanic,
    /// No selfheal, no panic settings: nothing acts (the kernel's OOM
    /// killer still does, as it always does).
    #[serde(rename = "none")]
    None,
    /// The guest under the host's `selfheal vm`, with VM-μCheckpoints
    /// every 50 ms: faults triggered once from the host, rolled back in
    /// place; tight kernel thresholds (they only report), selfheal in the
    /// guest sending heartbeats and diagnoses over the guest link.
    #[serde(rename = "vm-rollback")]
    VmRollback,
}

/// Seconds the kernel waits after a panic before it reboots (`panic=N`),
/// in every profile (under `-no-reboot` QEMU exits instead).
pub const PANIC_REBOOT_S: u64 = 1;

impl KernelProfile {
    /// Every profile, in report order.
    pub const ALL: &'static [KernelProfile] = &[
        KernelProfile::Default,
        KernelProfile::Tight,
        KernelProfile::Restart,
        KernelProfile::KernelPanic,
        KernelProfile::None,
        KernelProfile::VmRollback,
    ];

    /// Stable name (command line, reports, results.json).
    pub fn name(self) -> &'static str {
        match self {
            KernelProfile::Default => "default",
            KernelProfile::Tight => "tight",
            KernelProfile::Restart => "restart",
            KernelProfile::KernelPanic => "kernel-panic",
            KernelProfile::None => "none",
            KernelProfile::VmRollback => "vm-rollback",
        }
    }

    /// One line for the report.
    pub fn describe(self) -> &'static str {
        match self {
            KernelProfile::Default => "selfheal beside the kernel's detectors at Debian's thresholds",
            KernelProfile::Tight => "selfheal beside the kernel's detectors at their tightest thresholds",
            KernelProfile::Restart => "selfheal with controlled restart and the watchdog device armed",
            KernelProfile::KernelPanic => {
                "no selfheal; softlockup_panic, hung_task_panic, panic_on_rcu_stall, panic_on_oom, panic=1"
            }
            KernelProfile::None => "no selfheal and no panic settings: nothing acts",
            KernelProfile::VmRollback => {
                "the guest under the host's `selfheal vm`, VM-μCheckpoints every 50 ms, faults triggered once from the host"
            }
        }
    }

    /// True when the profile uses the kernel's tightest thresholds.
    fn tight(self) -> bool {
        self != KernelProfile::Default
    }

    /// `kernel.watchdog_thresh`: hard lockup after this, soft lockup after twice it.
    pub fn watchdog_thresh_s(self) -> u64 {
        if self.tight() {
            1
        } else {
            10
        }
    }

    /// `rcupdate.rcu_cpu_stall_timeout` (the kernel clamps it to at least 3 s).
    pub fn rcu_stall_s(self) -> u64 {
        if self.tight() {
            3
        } else {
            21
        }
    }

    /// `kernel.hung_task_timeout_secs`; khungtaskd checks once per timeout, so
    /// a task is reported between one and two timeouts after it blocked.
    pub fn hung_task_s(self) -> u64 {
        if self.tight() {
            1
        } else {
            120
        }
    }

    /// The longest a detector of this profile may take to report `detector`.
    pub fn worst_case_s(self, detector: KernelDetector) -> u64 {
        match detector {
            // Checked every 2/5 of the threshold: report by threshold + a period.
            KernelDetector::SoftLockup => 2 * self.watchdog_thresh_s() + self.watchdog_thresh_s(),
            KernelDetector::HardLockup => 2 * self.watchdog_thresh_s(),
            KernelDetector::HungTask => 2 * self.hung_task_s() + 1,
            KernelDetector::RcuStall => self.rcu_stall_s() + 2,
            // 512 MiB at the leak's 64 MiB/s is 8 s on an idle host; a
            // TCG guest on a busy one runs several times slower.
            KernelDetector::OomKiller => 25,
        }
    }

    /// selfheal runs in the guest's fault runs.
    pub fn runs_selfheal(self) -> bool {
        matches!(
            self,
            KernelProfile::Default
                | KernelProfile::Tight
                | KernelProfile::Restart
                | KernelProfile::VmRollback
        )
    }

    /// The guest runs under the host's `selfheal vm` (checkpoints, rollback
    /// in place), its faults triggered from the host over a virtio-serial
    /// port, its serial ports on sockets the lab reads.
    pub fn vm_rollback(self) -> bool {
        self == KernelProfile::VmRollback
    }

    /// The kernel panics on its own verdicts.
    pub fn kernel_panics(self) -> bool {
        self == KernelProfile::KernelPanic
    }

    /// selfheal runs with its controlled restart enabled.
    pub fn controlled_restart(self) -> bool {
        self == KernelProfile::Restart
    }

    /// The guest may reboot: QEMU runs without `-no-reboot` and the lab
    /// follows the guest into its next boot, which needs the state disk
    /// (to tell a second boot from the first and keep selfheal's store).
    pub fn follows_reboot(self) -> bool {
        matches!(
            self,
            KernelProfile::Restart | KernelProfile::KernelPanic | KernelProfile::None
        )
    }

    /// The guest has an i6300esb watchdog device (armed only by selfheal).
    pub fn watchdog_device(self) -> bool {
        self.follows_reboot()
    }

    /// Extra kernel command-line words of the profile.
    pub fn cmdline(self) -> Vec<String> {
        let mut w = Vec::new();
        if self.kernel_panics() {
            for s in [
                "softlockup_panic=1",
                "hung_task_panic=1",
                "nmi_watchdog=panic",
                "sysctl.kernel.panic_on_rcu_stall=1",
                "sysctl.vm.panic_on_oom=1",
            ] {
                w.push(s.to_string());
            }
        }
        w
    }
}

impl fmt::Display for KernelProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A profile name the lab does not know.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown profile `{0}`; known profiles: {known} (and `both` = tight,default)", known = KernelProfile::ALL.iter().map(|p| p.name()).collect::<Vec<_>>().join(", "))]
pub struct UnknownProfile(pub String);

impl FromStr for KernelProfile {
    type Err = UnknownProfile;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        KernelProfile::ALL
            .iter()
            .copied()
            .find(|p| p.name() == s || p.name().replace('-', "_") == s)
            .ok_or_else(|| UnknownProfile(s.to_string()))
    }
}

/// Parses `--profiles`: comma-separated names; `both` means tight,default.
pub fn parse_profiles(list: &[String]) -> Result<Vec<KernelProfile>, UnknownProfile> {
    let mut out = Vec::new();
    for item in list.iter().flat_map(|s| s.split(',')) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let add: Vec<KernelProfile> = if item == "both" {
            vec![KernelProfile::Tight, KernelProfile::Default]
        } else {
            vec![item.parse()?]
        };
        for p in add {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_both_expands() {
        for p in KernelProfile::ALL {
            assert_eq!(p.name().parse::<KernelProfile>().unwrap(), *p);
            assert_eq!(
                serde_json::to_string(p).unwrap(),
                format!("\"{}\"", p.name())
            );
        }
        assert_eq!(
            "kernel_panic".parse::<KernelProfile>().unwrap(),
            KernelProfile::KernelPanic
        );
        let p = parse_profiles(&["restart,kernel-panic".into(), "both".into()]).unwrap();
        assert_eq!(
            p,
            [
                KernelProfile::Restart,
                KernelProfile::KernelPanic,
                KernelProfile::Tight,
                KernelProfile::Default
            ]
        );
        let err = parse_profiles(&["fast".into()]).unwrap_err().to_string();
        assert!(
            err.contains("`fast`") && err.contains("kernel-panic"),
            "{err}"
        );
    }

    #[test]
    fn healing_profiles_share_the_machine_and_differ_in_who_acts() {
        let heal = [
            KernelProfile::Restart,
            KernelProfile::KernelPanic,
            KernelProfile::None,
        ];
        for p in heal {
            assert!(p.follows_reboot() && p.watchdog_device(), "{p}");
            assert_eq!(p.hung_task_s(), 1, "{p}: tight thresholds");
        }
        assert!(KernelProfile::Restart.runs_selfheal());
        assert!(!KernelProfile::KernelPanic.runs_selfheal());
        assert!(!KernelProfile::None.runs_selfheal() && KernelProfile::None.cmdline().is_empty());
        let c = KernelProfile::KernelPanic.cmdline();
        for w in [
            "softlockup_panic=1",
            "hung_task_panic=1",
            "sysctl.vm.panic_on_oom=1",
        ] {
            assert!(c.iter().any(|x| x == w), "{w}");
        }
        assert!(!KernelProfile::Tight.follows_reboot());
    }

    #[test]
    fn vm_rollback_runs_selfheal_in_a_guest_that_does_not_reboot() {
        let p: KernelProfile = "vm-rollback".parse().unwrap();
        assert_eq!(p, KernelProfile::VmRollback);
        assert!(p.vm_rollback() && p.runs_selfheal());
        assert!(!p.follows_reboot() && !p.watchdog_device() && !p.kernel_panics());
        assert_eq!(p.hung_task_s(), 1, "tight thresholds");
        assert!(!KernelProfile::Tight.vm_rollback());
    }
}
