//! The `vm-rollback` profile's view of a run, on the host's clock: what the
//! host's `selfheal vm` saw and did (its event log) against what the lab
//! sent the guest and when each lab-channel line arrived (`vm-host.log`).
//!
//! - **Rolled back**: a `vm_rollback` event carrying the engine's report.
//! - **Undone**: a rollback to a checkpoint taken before the host sent the
//!   trigger (event time minus the checkpoint's age), or else to one before
//!   the guest's INJECT marker after which no INJECT came again: the fault
//!   is gone from the guest's history. Rollbacks after that one are extra
//!   (the guest's diagnoses of the rollback's own time jump, or of a slow
//!   guest, acted on).
//! - **Served on without a reboot**: one boot id on the lab channel, no
//!   `vm_restart` and a single `vm_start`, every CPU's lab heartbeat back
//!   after the last rollback, and the guest's END marker.
//! - **Fault to serving**: from the host sending the trigger to the first
//!   moment after the undoing rollback by which every CPU's lab heartbeat
//!   had arrived again.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::RunRecord;

/// One `vm-rollback` run, as the host saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VmResult {
    /// The host's `selfheal vm` took checkpoints.
    pub checkpoints: bool,
    /// The lab sent the trigger (fault runs).
    pub triggered: bool,
    /// Times the lab sent it (again when the guest did not act on it
    /// within 2 s: the line was lost).
    #[serde(default)]
    pub trigger_sends: u32,
    /// The guest printed INJECT (read the trigger and injected).
    pub injected: bool,
    /// What `selfheal vm` acted on first: `hang`, `panic` or
    /// `guest_diagnosis` (None: it did not act).
    pub trigger: Option<String>,
    /// Rollbacks done after the trigger was sent (all of them in a
    /// fault-free run).
    pub rollbacks: u32,
    /// Rollbacks before the trigger was sent: the guest's diagnoses of a
    /// fault that was not there yet, acted on (false positives).
    #[serde(default)]
    pub rollbacks_before_trigger: u32,
    /// A rollback went back to before the fault (see the module docs).
    #[serde(default)]
    pub undone: bool,
    /// Rollbacks after the undoing one.
    #[serde(default)]
    pub extra_rollbacks: u32,
    /// Rollbacks decided but refused or impossible (then `left as is`).
    pub gave_up: bool,
    /// `selfheal vm` dismissed a silence as "not hung".
    pub dismissed: u32,
    /// Distinct boot ids on the lab channel (1: never rebooted).
    pub boot_ids: u32,
    /// QEMU was started again or the guest rebooted.
    pub restarted: bool,
    /// Every CPU's heartbeat arrived after the last rollback.
    pub heartbeat_back: bool,
    /// Served on without a reboot (see the module docs).
    pub served_without_reboot: bool,
    /// Trigger sent → `selfheal vm` decided, ms.
    pub detect_ms: Option<i64>,
    /// Trigger sent → the last rollback done, ms.
    pub rollback_ms: Option<i64>,
    /// Trigger sent → serving again after the undoing rollback, ms.
    pub fault_to_serving_ms: Option<i64>,
    /// The guest printed its END marker.
    #[serde(default)]
    pub ended: bool,
    /// Age of the checkpoint each rollback restored, ms.
    #[serde(default)]
    pub checkpoint_ages_ms: Vec<i64>,
    /// How long QEMU stood stopped for each rollback (the engine's restore), ms.
    #[serde(default)]
    pub rollback_pause_ms: Vec<f64>,
    /// Checkpoint pauses (QEMU stopped) over the run: count, p50, p99, ms
    /// (the host's last `checkpoint` summary event; None without one).
    #[serde(default)]
    pub checkpoint_pauses: Option<u64>,
    /// p50 of those, ms.
    #[serde(default)]
    pub checkpoint_pause_p50_ms: Option<f64>,
    /// p99 of those, ms.
    #[serde(default)]
    pub checkpoint_pause_p99_ms: Option<f64>,
    /// Guest diagnoses the host recorded but did not act on because they
    /// arrived in the settle window and covered a rollback.
    #[serde(default)]
    pub settled: u32,
    /// Rollbacks the guest was told of over the link.
    #[serde(default)]
    pub guest_told: u32,
    /// How the run went, in a sentence.
    pub note: String,
}

impl VmResult {
    /// Rolled back to before the fault, then served on without a reboot.
    pub fn recovered_by_rollback(&self) -> bool {
        self.undone && self.served_without_reboot
    }
}

/// A `vm-host.log` line: host Unix ms and the line.
fn host_lines(text: &str) -> impl Iterator<Item = (i64, &str)> {
    text.lines().filter_map(|l| {
        let (ms, rest) = l.split_once('\t')?;
        Some((ms.trim().parse().ok()?, rest.trim()))
    })
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// Scores a `vm-rollback` run from its record, `vm-host.log` and the host
/// `selfheal vm`'s event log.
pub fn analyze_vm(rec: &RunRecord, vm_host: &str, vm_events: &str) -> VmResult {
    let mut r = VmResult {
        checkpoints: !rec.scenario.vm_checkpoints_off,
        ..VmResult::default()
    };
    let mut sends: Vec<i64> = Vec::new();
    let mut injects: Vec<i64> = Vec::new();
    let mut boot_ids = BTreeSet::new();
    let mut beats: Vec<(i64, u32)> = Vec::new();
    for (ms, line) in host_lines(vm_host) {
        if line == "HOST inject" || line.starts_with("HOST inject again=") {
            sends.push(ms);
        } else if line.starts_with("LAB INJECT ") {
            injects.push(ms);
        } else if line.starts_with("LAB END ") {
            r.ended = true;
        } else if line.starts_with("LAB BOOT ") {
            if let Some(id) = field(line, "boot_id").filter(|s| !s.is_empty()) {
                boot_ids.insert(id.to_string());
            }
        } else if line.starts_with("HB ") {
            if let Some(cpu) = field(line, "cpu").and_then(|c| c.parse().ok()) {
                beats.push((ms, cpu));
            }
        }
    }
    // The send the guest acted on: the last one before its first INJECT
    // after the first send (else the first).
    let first_inject = injects
        .iter()
        .copied()
        .find(|&i| sends.first().is_some_and(|&s| i >= s));
    let sent = match first_inject {
        Some(i) => sends.iter().copied().rfind(|&s| s <= i),
        None => sends.first().copied(),
    };
    r.trigger_sends = sends.len() as u32;
    r.triggered = sent.is_some();
    r.boot_ids = boot_ids.len() as u32;
    let (mut starts, mut restarts) = (0u32, 0u32);
    let mut first_incident = None;
    // (done at, checkpoint taken at) per rollback, host clock.
    let mut rollbacks: Vec<(i64, i64)> = Vec::new();
    for line in vm_events.lines() {
        let Ok(e) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let s = |k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or("");
        if s("source").starts_with("guest:") {
            continue;
        }
        let t = e.get("time_unix_ms").and_then(|v| v.as_i64()).unwrap_or(0);
        let d = e.get("details").cloned().unwrap_or_default();
        match s("kind") {
            "vm_start" => starts += 1,
            "vm_restart" | "vm_gave_up" => restarts += 1,
            "dismissed" if d.get("covers_ms").is_some() => r.settled += 1,
            "dismissed" => r.dismissed += 1,
            "checkpoint" if d.get("run_pauses").is_some() => {
                let p = &d["run_pauses"];
                r.checkpoint_pauses = p.get("n").and_then(|v| v.as_u64());
                r.checkpoint_pause_p50_ms = p.get("p50_ms").and_then(|v| v.as_f64());
                r.checkpoint_pause_p99_ms = p.get("p99_ms").and_then(|v| v.as_f64());
            }
            "vm_hang" | "vm_crash"
                if d.get("rollback_before_ms").is_some()
                    && first_incident.is_none()
                    && sent.is_some_and(|s| t >= s) =>
            {
                first_incident = Some(t);
                r.trigger = d.get("trigger").and_then(|v| v.as_str()).map(String::from);
            }
            "vm_hang" if d.get("why").is_some() => r.gave_up = true,
            "vm_rollback" if d.get("report").is_some() => {
                let age = d["report"]
                    .get("checkpoint_age_ms")
                    .and_then(|v| v.as_i64())
                    .unwrap_or(0);
                r.checkpoint_ages_ms.push(age);
                if let Some(us) = d["report"].get("duration_us").and_then(|v| v.as_f64()) {
                    r.rollback_pause_ms.push(us / 1000.0);
                }
                if d.get("guest_told").and_then(|v| v.as_bool()) == Some(true) {
                    r.guest_told += 1;
                }
                rollbacks.push((t, t - age));
            }
            _ => {}
        }
    }
    // Before the trigger: false positives, not part of the fault's story.
    if let Some(sent) = sent {
        r.rollbacks_before_trigger = rollbacks.iter().filter(|x| x.0 < sent).count() as u32;
        rollbacks.retain(|x| x.0 >= sent);
    }
    if sent.is_some() && !injects.iter().any(|&i| sent.is_some_and(|s| i >= s)) {
        // The fault never ran: every rollback was on a false positive.
        r.rollbacks_before_trigger += rollbacks.len() as u32;
        rollbacks.clear();
        first_incident = None;
        r.trigger = None;
    }
    r.rollbacks = rollbacks.len() as u32;
    r.restarted = restarts > 0 || starts > 1 || r.boot_ids > 1;
    let ncpu = rec.guest_cpus.unwrap_or(1).max(1);
    // By when had every CPU beaten again after `from`?
    let serving_after = |from: i64| -> Option<i64> {
        (0..ncpu)
            .map(|c| {
                beats
                    .iter()
                    .find(|(ms, cpu)| *cpu == c && *ms >= from)
                    .map(|b| b.0)
            })
            .collect::<Option<Vec<i64>>>()
            .and_then(|v| v.into_iter().max())
    };
    let undo = sent.and_then(|sent| {
        rollbacks
            .iter()
            .position(|&(_, taken)| taken < sent)
            .or_else(|| {
                rollbacks.iter().position(|&(done, taken)| {
                    injects.first().is_some_and(|&i| taken < i)
                        && !injects.iter().any(|&i| i > done)
                })
            })
    });
    r.undone = undo.is_some();
    r.extra_rollbacks = undo.map_or(0, |i| (rollbacks.len() - i - 1) as u32);
    let last = rollbacks.last().map(|x| x.0).or(sent);
    let injected_after_trigger = injects.iter().any(|&i| sent.is_some_and(|s| i >= s));
    r.injected = injected_after_trigger;
    r.heartbeat_back = last.and_then(serving_after).is_some();
    r.fault_to_serving_ms = undo
        .and_then(|i| serving_after(rollbacks[i].0))
        .zip(sent)
        .map(|(s, t)| s - t);
    r.detect_ms = first_incident.zip(sent).map(|(a, b)| a - b);
    r.rollback_ms = undo.zip(sent).map(|(i, b)| rollbacks[i].0 - b);
    r.served_without_reboot =
        !r.restarted && r.boot_ids <= 1 && rec.booted && r.heartbeat_back && r.ended;
    r.note = match (rec.scenario.class.is_some(), r.triggered, r.rollbacks) {
        (false, ..) => "fault-free".into(),
        (true, false, _) => "the trigger was never sent (the guest did not arm)".into(),
        (true, true, _) if !r.injected => format!(
            "the guest never injected (the trigger was lost{})",
            if r.rollbacks_before_trigger > 0 {
                ", after a rollback before it"
            } else {
                ""
            }
        ),
        (true, true, 0) if r.served_without_reboot => {
            "not rolled back: the guest served on by itself".into()
        }
        (true, true, 0) => "not rolled back, and the guest did not serve on".into(),
        (true, true, n) => {
            let mut parts = vec![format!(
                "rolled back {n}× (checkpoints {:?} ms old)",
                r.checkpoint_ages_ms
            )];
            parts.push(if r.undone {
                format!("the fault undone by rollback {}", n - r.extra_rollbacks)
            } else {
                "never to before the fault".into()
            });
            if r.restarted {
                parts.push("restarted".into());
            }
            if !r.heartbeat_back {
                parts.push("heartbeats did not come back".into());
            }
            if r.served_without_reboot {
                parts.push("served on, one boot".into());
            }
            parts.join("; ")
        }
    };
    if r.trigger_sends > 1 {
        r.note.push_str(&format!(
            "; trigger sent {}× (earlier lines lost)",
            r.trigger_sends
        ));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::{Outcome, QemuExit};
    use crate::scenario::{FaultClass, KernelProfile, Scenario, Workload};

    fn record(outcome: Outcome) -> RunRecord {
        RunRecord {
            scenario: Scenario {
                id: "irq_loop-001".into(),
                class: Some(FaultClass::IrqLoop),
                workload: Workload::Mix,
                profile: KernelProfile::VmRollback,
                selfheal: true,
                dry_run: false,
                inject_ms: 3000,
                observe_s: 15,
                workload_s: 23,
                fault_cpu: 1,
                calibrate_s: 0,
                second_observe_s: 0,
                vm_checkpoints_off: false,
            },
            log_dir: "runs/x".into(),
            host_ms: 60_000,
            qemu_exit: QemuExit::Exited,
            booted: true,
            guest_cpus: Some(2),
            fault_start_ms: Some(1),
            fault_confirmed: true,
            selfheal: Default::default(),
            kernel: Default::default(),
            kernel_false_alarms: Default::default(),
            outcome,
            outcome_note: String::new(),
            workload_ops: None,
            workload_elapsed_ms: None,
            errors: vec![],
            boots: 1,
            restart: None,
            restart_recorded: false,
            downtime_ms: None,
            downtime_clock: None,
            vm: None,
            other_cpu_lockup: None,
        }
    }

    const HOST: &str = "1000\tLAB BOOT real_ms=5 mono_ms=1 boot=1 boot_id=aa-bb ncpu=2\n\
        1500\tHB cpu=0 seq=1 real_ms=6 mono_ms=2\n\
        2000\tHOST inject\n\
        2010\tLAB INJECT real_ms=7 mono_ms=3 class=irq_loop cpu=1\n\
        2600\tHB cpu=0 seq=2 real_ms=8 mono_ms=4\n\
        3150\tHB cpu=1 seq=9 real_ms=9 mono_ms=5\n\
        3300\tHB cpu=0 seq=10 real_ms=10 mono_ms=6\n\
        3400\tLAB BOOT real_ms=5 mono_ms=1 boot=1 boot_id=aa-bb ncpu=2\n\
        9000\tLAB END real_ms=11 mono_ms=7 class=irq_loop boot=1 injected=0\n\
        garbage line\n";

    const EVENTS: &str = r#"{"time_unix_ms":900,"kind":"vm_start","severity":"info","source":"vm","message":"started"}
{"time_unix_ms":2400,"kind":"diagnosis","severity":"critical","source":"guest:heavy","message":"x","details":{"class":"kernel_stall"}}
{"time_unix_ms":2950,"kind":"vm_hang","severity":"critical","source":"vm","message":"m","details":{"trigger":"guest_diagnosis","attempt":0,"rollback_before_ms":1200}}
{"time_unix_ms":3000,"kind":"vm_rollback","severity":"critical","source":"vm","message":"m","details":{"trigger":"guest_diagnosis","attempt":0,"report":{"checkpoint_age_ms":1250}}}
{"time_unix_ms":8100,"kind":"vm_rollback","severity":"info","source":"vm","message":"recovered","details":{"outcome":"recovered"}}
not json
"#;

    #[test]
    fn a_rollback_that_served_on_is_timed_on_the_host_clock() {
        let r = analyze_vm(&record(Outcome::Healthy), HOST, EVENTS);
        assert!(r.triggered && r.injected && r.checkpoints && r.ended);
        assert_eq!(r.trigger.as_deref(), Some("guest_diagnosis"));
        assert_eq!(
            (r.rollbacks, r.boot_ids),
            (1, 1),
            "a replayed BOOT line is one boot"
        );
        assert_eq!(r.checkpoint_ages_ms, vec![1250]);
        assert_eq!(r.detect_ms, Some(950));
        assert_eq!(r.rollback_ms, Some(1000));
        // CPU 1 beat again at 3150, CPU 0 at 3300: serving from 3300.
        assert_eq!(r.fault_to_serving_ms, Some(1300));
        assert!(
            r.heartbeat_back && !r.restarted && r.recovered_by_rollback(),
            "{r:?}"
        );
        assert!(r.note.contains("rolled back 1×"), "{}", r.note);
        assert_eq!(r.checkpoint_pauses, None, "no summary event");
        assert!(r.rollback_pause_ms.is_empty());
    }

    #[test]
    fn pauses_rollback_times_and_settled_diagnoses_are_read_per_run() {
        let events = format!(
            "{EVENTS}{}",
            r#"{"time_unix_ms":3000,"kind":"vm_rollback","severity":"critical","source":"vm","message":"m","details":{"trigger":"hang","attempt":1,"guest_told":true,"report":{"checkpoint_age_ms":500,"duration_us":26900}}}
{"time_unix_ms":3500,"kind":"dismissed","severity":"info","source":"vm","message":"m","details":{"class":"kernel_stall","covers_ms":60,"after_rollback_ms":2600}}
{"time_unix_ms":5000,"kind":"checkpoint","severity":"info","source":"vm","message":"m","details":{"pauses":{"n":3,"p50_ms":9.0,"p99_ms":20.0},"run_pauses":{"n":80,"p50_ms":11.5,"p99_ms":64.0,"max_ms":70.0}}}
{"time_unix_ms":9000,"kind":"checkpoint","severity":"info","source":"vm","message":"m","details":{"pauses":{"n":3,"p50_ms":9.0,"p99_ms":20.0},"run_pauses":{"n":160,"p50_ms":12.0,"p99_ms":80.5,"max_ms":90.0}}}
{"time_unix_ms":9100,"kind":"dismissed","severity":"info","source":"vm","message":"m","details":{"silent_ms":1000}}
"#
        );
        let r = analyze_vm(&record(Outcome::Healthy), HOST, &events);
        assert_eq!(r.rollback_pause_ms, vec![26.9]);
        assert_eq!(
            (
                r.checkpoint_pauses,
                r.checkpoint_pause_p50_ms,
                r.checkpoint_pause_p99_ms
            ),
            (Some(160), Some(12.0), Some(80.5)),
            "the last summary is the run's"
        );
        assert_eq!((r.settled, r.dismissed, r.guest_told), (1, 1, 1));
    }

    #[test]
    fn a_new_boot_id_or_a_restart_is_not_served_on() {
        let host = HOST.replace(
            "3400\tLAB BOOT real_ms=5 mono_ms=1 boot=1 boot_id=aa-bb",
            "3400\tLAB BOOT real_ms=5 mono_ms=1 boot=1 boot_id=cc-dd",
        );
        let r = analyze_vm(&record(Outcome::Healthy), &host, EVENTS);
        assert_eq!(r.boot_ids, 2);
        assert!(r.restarted && !r.served_without_reboot && !r.recovered_by_rollback());
        let ev = format!(
            "{EVENTS}{}\n",
            r#"{"time_unix_ms":9000,"kind":"vm_restart","severity":"critical","source":"vm","message":"restart"}"#
        );
        let r = analyze_vm(&record(Outcome::Healthy), HOST, &ev);
        assert!(r.restarted && !r.recovered_by_rollback());
    }

    #[test]
    fn without_a_rollback_or_heartbeats_it_says_so() {
        let r = analyze_vm(&record(Outcome::Healthy), HOST, "");
        assert_eq!(r.rollbacks, 0);
        assert!(r.served_without_reboot && !r.recovered_by_rollback());
        assert!(r.note.contains("served on by itself"), "{}", r.note);
        // A CPU that never beat again after the rollback.
        let host: String = HOST
            .lines()
            .filter(|l| !l.contains("cpu=1 seq=9"))
            .map(|l| format!("{l}\n"))
            .collect();
        let r = analyze_vm(&record(Outcome::Degraded), &host, EVENTS);
        assert!(!r.heartbeat_back && r.fault_to_serving_ms.is_none());
        assert!(r.note.contains("did not come back"), "{}", r.note);
        let r = analyze_vm(&record(Outcome::Healthy), "", "");
        assert!(!r.triggered && r.note.contains("never sent"), "{}", r.note);
    }

    /// The first rollback lands after the guest took the trigger: the
    /// fault comes back (a second INJECT), the second goes back before the
    /// trigger, a third (the guest's diagnosis of the time jump) is extra.
    #[test]
    fn the_rollback_that_undid_the_fault_is_the_one_timed() {
        let host = "1000\tLAB BOOT real_ms=5 mono_ms=1 boot=1 boot_id=aa ncpu=1\n\
            2000\tHOST inject\n\
            2300\tLAB INJECT real_ms=7 mono_ms=3 class=irq_loop cpu=1\n\
            5200\tHB cpu=0 seq=2 real_ms=8 mono_ms=4\n\
            5600\tLAB INJECT real_ms=7 mono_ms=3 class=irq_loop cpu=1\n\
            8700\tHB cpu=0 seq=3 real_ms=8 mono_ms=4\n\
            11000\tHB cpu=0 seq=4 real_ms=8 mono_ms=4\n\
            12000\tLAB END real_ms=11 mono_ms=7 class=irq_loop boot=1 injected=0\n";
        let ev = |t: i64, age: i64| {
            format!(
                "{{\"time_unix_ms\":{t},\"kind\":\"vm_rollback\",\"source\":\"vm\",\"details\":{{\"report\":{{\"checkpoint_age_ms\":{age}}}}}}}\n"
            )
        };
        // Taken at 2100 (after the trigger), 1500, 7000.
        let events = ev(5000, 2900) + &ev(8500, 7000) + &ev(10_000, 3000);
        let mut rec = record(Outcome::Degraded);
        rec.guest_cpus = Some(1);
        let r = analyze_vm(&rec, host, &events);
        assert_eq!((r.rollbacks, r.extra_rollbacks), (3, 1));
        assert!(r.undone && r.served_without_reboot && r.recovered_by_rollback());
        assert_eq!(r.rollback_ms, Some(6500));
        assert_eq!(r.fault_to_serving_ms, Some(6700), "{r:?}");
        assert!(r.note.contains("undone by rollback 2"), "{}", r.note);
    }

    /// A lost trigger line sent again: timed from the send the guest took.
    #[test]
    fn a_trigger_sent_again_is_timed_from_the_one_taken() {
        let host = HOST.replace(
            "2000\tHOST inject\n",
            "1000\tHOST inject\n2000\tHOST inject again=1\n",
        );
        let r = analyze_vm(&record(Outcome::Healthy), &host, EVENTS);
        assert_eq!(r.trigger_sends, 2);
        assert_eq!(r.detect_ms, Some(950));
        assert_eq!(r.fault_to_serving_ms, Some(1300));
        assert!(
            r.note.ends_with("trigger sent 2× (earlier lines lost)"),
            "{}",
            r.note
        );
    }

    /// A rollback on a false positive before the trigger is not the fault's.
    #[test]
    fn rollbacks_before_the_trigger_are_counted_apart() {
        let early = r#"{"time_unix_ms":1800,"kind":"vm_hang","source":"vm","details":{"trigger":"guest_diagnosis","rollback_before_ms":500}}
{"time_unix_ms":1810,"kind":"vm_rollback","source":"vm","details":{"report":{"checkpoint_age_ms":900}}}
"#;
        let r = analyze_vm(&record(Outcome::Healthy), HOST, &format!("{early}{EVENTS}"));
        assert_eq!((r.rollbacks, r.rollbacks_before_trigger), (1, 1));
        assert_eq!(r.detect_ms, Some(950), "the incident after the trigger");
        assert!(r.undone && r.recovered_by_rollback());
        // The trigger lost: the guest never injected after it.
        let host = HOST.replace("2010\tLAB INJECT", "1500\tLAB INJECT");
        let r = analyze_vm(&record(Outcome::Healthy), &host, early);
        assert!(!r.injected && !r.undone && r.rollbacks == 0);
        assert_eq!(r.rollbacks_before_trigger, 1);
        // Rollbacks after a lost trigger are false positives too.
        let r = analyze_vm(&record(Outcome::Healthy), &host, EVENTS);
        assert!(!r.injected && !r.undone && r.rollbacks == 0 && r.fault_to_serving_ms.is_none());
        assert!(r.detect_ms.is_none() && r.trigger.is_none());
        assert_eq!(r.rollbacks_before_trigger, 1);
        assert!(
            r.note.contains("trigger was lost, after a rollback"),
            "{}",
            r.note
        );
    }
}
