//! Healing, for the profiles that follow a guest through restarts: why it
//! restarted, whether its next boot served again, and the downtime.
//!
//! - **Why**: a `Kernel panic` line in the first boot is the kernel's own
//!   panic; a `reboot` recovery step that reported `restarting` (and the
//!   kernel's `reboot: Restarting system` or kexec line after it) is
//!   selfheal's controlled restart; a reset with neither is the watchdog
//!   device (nobody petted it: user space was dead).
//! - **Served again**: the last boot marked SERVING and, in its last
//!   [`HEALTH_WINDOW_MS`] before END, every CPU's heartbeat was regular.
//! - **Downtime**: restarted runs, from the fault's start to the SERVING
//!   marker of the boot that served, on the host's clock (the guest's clock
//!   starts again from the RTC at each boot, to the second); the degraded
//!   time before the restart counts. Runs healthy in place, from the
//!   fault's start to the end of the last heartbeat gap over
//!   [`HEALTHY_MAX_GAP_MS`] on any CPU (0 when none stopped). Otherwise
//!   none: the guest did not serve again within the observation.

use serde::{Deserialize, Serialize};

use super::{Outcome, HEALTHY_MAX_GAP_MS, HEALTH_WINDOW_MS};
use crate::parse::{self, HostMark, KernelLine, LabEvent, LabLog};

/// Why a guest restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartKind {
    /// selfheal's controlled restart: evidence written, disks synced, then
    /// reboot(2) or kexec.
    Controlled,
    /// The kernel panicked (and rebooted after `panic=N`).
    KernelPanic,
    /// A reset without a panic or a controlled restart: the watchdog
    /// device, which nobody petted once user space stopped.
    Watchdog,
    /// The kernel was asked to restart, but not by a selfheal step.
    Other,
}

impl RestartKind {
    /// Every kind, in report order.
    pub const ALL: &'static [RestartKind] = &[
        RestartKind::Controlled,
        RestartKind::KernelPanic,
        RestartKind::Watchdog,
        RestartKind::Other,
    ];

    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            RestartKind::Controlled => "controlled",
            RestartKind::KernelPanic => "kernel_panic",
            RestartKind::Watchdog => "watchdog",
            RestartKind::Other => "other",
        }
    }
}

/// The verdict on a run whose guest restarted.
pub(super) struct Restarted {
    pub outcome: Outcome,
    pub note: String,
    pub kind: RestartKind,
    pub recorded: bool,
}

/// `first_console` and `first_events` are the first boot's; `all_events`
/// every boot's.
pub(super) fn judge_restarted(
    first_console: &[KernelLine],
    first_events: &[LabEvent],
    all_events: &[LabEvent],
    lab: &LabLog,
) -> Restarted {
    let restart_step = first_events.iter().find(|e| {
        e.kind == "recovery"
            && e.action.as_deref() == Some("reboot")
            && e.outcome.as_deref() == Some("restarting")
    });
    let kind = if parse::panic_line(first_console).is_some() {
        RestartKind::KernelPanic
    } else if restart_step.is_some() {
        RestartKind::Controlled
    } else if parse::restart_line(first_console).is_some() {
        RestartKind::Other
    } else {
        RestartKind::Watchdog
    };
    let recorded = all_events
        .iter()
        .any(|e| e.boot > 1 && e.kind == "restart" && e.incident.is_some());
    let last = lab.last_boot();
    let why = match kind {
        RestartKind::KernelPanic => format!(
            "kernel: {}",
            parse::panic_line(first_console).map_or("", |l| l.text.as_str())
        ),
        RestartKind::Controlled => format!(
            "selfheal restarted it ({})",
            restart_step.map_or("", |e| e.message.as_str())
        ),
        RestartKind::Watchdog => "reset by the watchdog device".to_string(),
        RestartKind::Other => "reboot(2) without a selfheal step".to_string(),
    };
    let (outcome, health) = match (lab.mark_in(last, "SERVING"), lab.mark_in(last, "END")) {
        (None, _) => (Outcome::Rebooted, format!("boot {last} never served")),
        (Some(_), None) => (Outcome::Rebooted, format!("boot {last} never finished")),
        (Some(_), Some(end)) => {
            let ncpu = lab
                .mark_in(last, "BOOT")
                .and_then(|m| m.int("ncpu"))
                .unwrap_or(1) as u32;
            let gaps: Vec<String> = (0..ncpu)
                .filter_map(|cpu| {
                    match lab.max_heartbeat_gap_in(
                        last,
                        cpu,
                        end.real_ms - HEALTH_WINDOW_MS,
                        end.real_ms,
                    ) {
                        Some(g) if g <= HEALTHY_MAX_GAP_MS => None,
                        Some(g) => Some(format!("cpu{cpu} heartbeat gap {g} ms")),
                        None => Some(format!("cpu{cpu} heartbeat never seen")),
                    }
                })
                .collect();
            if gaps.is_empty() {
                (
                    Outcome::Restarted,
                    format!("boot {last} serving, all CPUs beating"),
                )
            } else {
                (
                    Outcome::Rebooted,
                    format!("boot {last}: {}", gaps.join("; ")),
                )
            }
        }
    };
    let note = format!(
        "{why}; {health}{}",
        if recorded {
            "; the next boot recorded the restart with its incident"
        } else {
            ""
        }
    );
    Restarted {
        outcome,
        note,
        kind,
        recorded,
    }
}

/// The downtime in ms and the clock that measured it, or `None` when the
/// guest did not serve again. `inject_real_ms` is the INJECT marker's guest
/// time, to place the fault's start on the host's clock.
pub(super) fn downtime(
    outcome: Outcome,
    fault_start_ms: Option<i64>,
    inject_real_ms: Option<i64>,
    lab: &LabLog,
    host: &[HostMark],
) -> Option<(i64, &'static str)> {
    let start = fault_start_ms?;
    match outcome {
        Outcome::Healthy => {
            let end = lab.mark_in(1, "END")?.real_ms;
            let ncpu = lab
                .mark_in(1, "BOOT")
                .and_then(|m| m.int("ncpu"))
                .unwrap_or(1) as u32;
            let back = lab.last_gap_end(1, ncpu, start, end, HEALTHY_MAX_GAP_MS);
            Some((back.map_or(0, |t| (t - start).max(0)), "guest"))
        }
        Outcome::Restarted => {
            let last = lab.last_boot();
            let host_inject = host.iter().find(|m| m.boot == 1 && m.tag == "INJECT");
            let host_serving = host.iter().find(|m| m.boot == last && m.tag == "SERVING");
            if let (Some(i), Some(s), Some(inj)) = (host_inject, host_serving, inject_real_ms) {
                // The fault started this long after the INJECT marker.
                let lag = start - inj;
                return Some((s.host_ms as i64 - i.host_ms as i64 - lag, "host"));
            }
            // Runs without host marks: the guest clocks, to about a second.
            let serving = lab.mark_in(last, "SERVING")?;
            Some(((serving.real_ms - start).max(0), "guest"))
        }
        Outcome::Degraded | Outcome::Rebooted | Outcome::Hung => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{parse_console, parse_events, parse_host_marks, parse_lab};

    fn hb(boot_base: i64, cpu: u32, from: i64, to: i64, step: i64) -> String {
        (from..to)
            .step_by(step as usize)
            .enumerate()
            .map(|(i, t)| {
                format!(
                    "HB cpu={cpu} seq={i} real_ms={} mono_ms={}\n",
                    t,
                    t - boot_base
                )
            })
            .collect()
    }

    /// Boot 1: the fault at 10_000, a controlled restart; boot 2 serves at
    /// 30_000 (guest clock) and ends healthy.
    fn restarted_lab() -> String {
        let mut t = String::new();
        t += "LAB BOOT real_ms=5000 mono_ms=1 boot=1 ncpu=2\n";
        t += &hb(5000, 0, 5000, 12_000, 100);
        t += "LAB INJECT real_ms=9990 mono_ms=4990 class=preempt_loop\n";
        t += "LAB BOOT real_ms=29000 mono_ms=1 boot=2 ncpu=2\n";
        t += "LAB SERVING real_ms=30000 mono_ms=1000 boot=2\n";
        t += &hb(29000, 0, 30_000, 38_000, 100);
        t += &hb(29000, 1, 30_000, 38_000, 100);
        t += "LAB END real_ms=38000 mono_ms=9000 boot=2\n";
        t
    }

    #[test]
    fn a_controlled_restart_is_told_apart_and_timed_on_the_host_clock() {
        let console = parse_console(
            "[    1.000000] Linux version 6.1\n[    9.000000] lab_fault: preempt_loop started\n\
             [   15.000000] reboot: Restarting system\n[    0.000000] Linux version 6.1\n[    1.0] x\n",
        );
        let first = parse::first_boot(&console);
        assert_eq!(first.len(), 3);
        let (events, _) = parse_events(
            "{\"time_unix_ms\":1,\"kind\":\"start\",\"source\":\"daemon\",\"message\":\"\"}\n\
             {\"time_unix_ms\":2,\"kind\":\"recovery\",\"source\":\"recovery\",\"message\":\"kernel_stall: reboot\",\"details\":{\"action\":\"reboot\",\"outcome\":\"restarting\",\"incident\":{\"id\":\"b1-2\"}}}\n\
             {\"time_unix_ms\":3,\"kind\":\"start\",\"source\":\"daemon\",\"message\":\"\"}\n\
             {\"time_unix_ms\":4,\"kind\":\"restart\",\"source\":\"daemon\",\"message\":\"\",\"details\":{\"incident\":{\"id\":\"b1-2\"}}}\n",
        );
        assert_eq!(
            events.iter().map(|e| e.boot).collect::<Vec<_>>(),
            [1, 1, 2, 2]
        );
        let first_events: Vec<LabEvent> = events.iter().filter(|e| e.boot == 1).cloned().collect();
        let lab = parse_lab(&restarted_lab());
        assert_eq!(lab.boots(), 2);
        let r = judge_restarted(first, &first_events, &events, &lab);
        assert_eq!(r.kind, RestartKind::Controlled);
        assert!(r.recorded, "{}", r.note);
        assert_eq!(r.outcome, Outcome::Restarted, "{}", r.note);
        // Host: INJECT seen at 6_000, SERVING at 27_000; the fault started
        // 10 ms after INJECT.
        let host = parse_host_marks(
            "100\tLAB BOOT real_ms=5000\n6000\tLAB INJECT real_ms=9990\n26000\tLAB BOOT real_ms=29000\n27000\tLAB SERVING real_ms=30000\n",
        );
        assert_eq!(
            downtime(Outcome::Restarted, Some(10_000), Some(9_990), &lab, &host),
            Some((20_990, "host"))
        );
        // Without host marks: the guest clocks.
        assert_eq!(
            downtime(Outcome::Restarted, Some(10_000), Some(9_990), &lab, &[]),
            Some((20_000, "guest"))
        );
    }

    #[test]
    fn a_reset_without_panic_or_step_is_the_watchdog_and_a_dead_next_boot_is_not_served() {
        let console =
            parse_console("[    1.000000] Linux version 6.1\n[    0.500000] Linux version 6.1\n");
        let mut t = restarted_lab();
        t = t.replace("LAB SERVING real_ms=30000 mono_ms=1000 boot=2\n", "");
        let lab = parse_lab(&t);
        let r = judge_restarted(parse::first_boot(&console), &[], &[], &lab);
        assert_eq!(r.kind, RestartKind::Watchdog);
        assert_eq!(r.outcome, Outcome::Rebooted);
        assert!(!r.recorded);
        assert_eq!(
            downtime(r.outcome, Some(10_000), Some(9_990), &lab, &[]),
            None
        );
        let panicked =
            parse_console("[    3.000000] Kernel panic - not syncing: softlockup: hung tasks\n");
        let r = judge_restarted(&panicked, &[], &[], &parse_lab(&restarted_lab()));
        assert_eq!(r.kind, RestartKind::KernelPanic);
    }

    #[test]
    fn in_place_downtime_ends_with_the_last_heartbeat_gap() {
        let mut t = String::from("LAB BOOT real_ms=0 mono_ms=0 ncpu=2\n");
        t += &hb(0, 0, 0, 20_000, 100);
        // CPU 1 stops from 10_000 to 12_300, then beats again.
        t += &hb(0, 1, 0, 10_000, 100);
        t += &hb(0, 1, 12_300, 20_000, 100);
        t += "LAB END real_ms=20000 mono_ms=20000\n";
        let lab = parse_lab(&t);
        assert_eq!(
            downtime(Outcome::Healthy, Some(10_050), None, &lab, &[]),
            Some((2_250, "guest"))
        );
        // A short stall (under 500 ms) is no downtime.
        let mut t = String::from("LAB BOOT real_ms=0 mono_ms=0 ncpu=1\n");
        t += &hb(0, 0, 0, 10_000, 100);
        t += &hb(0, 0, 10_300, 20_000, 100);
        t += "LAB END real_ms=20000 mono_ms=20000\n";
        assert_eq!(
            downtime(Outcome::Healthy, Some(10_000), None, &parse_lab(&t), &[]),
            Some((0, "guest"))
        );
        assert_eq!(
            downtime(Outcome::Degraded, Some(1), None, &parse_lab(&t), &[]),
            None
        );
    }
}
