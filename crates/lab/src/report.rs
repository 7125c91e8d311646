//! Aggregates scored runs into per-class and fault-free summaries, and
//! writes them as Markdown and JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::analyze::{Outcome, RestartKind, RunRecord};
use crate::scenario::{FaultClass, KernelDetector, KernelProfile, Workload};

/// Latency statistics over the runs that detected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Runs that detected.
    pub detected: usize,
    /// Runs considered.
    pub runs: usize,
    /// Median, ms.
    pub median_ms: Option<f64>,
    /// 95th percentile (nearest rank), ms.
    pub p95_ms: Option<f64>,
}

impl Latency {
    /// Statistics of `samples` out of `runs` runs.
    pub fn of(mut samples: Vec<i64>, runs: usize) -> Latency {
        samples.sort_unstable();
        Latency {
            detected: samples.len(),
            runs,
            median_ms: median(&samples),
            p95_ms: percentile(&samples, 95.0),
        }
    }
}

/// Median of sorted samples (mean of the middle two for an even count).
pub fn median(sorted: &[i64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2] as f64),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) as f64 / 2.0),
    }
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[i64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1] as f64)
}

/// One fault class across its injections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassSummary {
    /// The class.
    pub class: FaultClass,
    /// Injections that ran (guest booted and injected).
    pub injections: usize,
    /// selfheal detection latency.
    pub selfheal: Latency,
    /// Runs with a diagnosis.
    pub diagnosed: usize,
    /// Runs whose diagnosis class was right.
    pub diagnosed_correctly: usize,
    /// Runs whose culprit was right.
    pub culprit_correct: usize,
    /// Diagnoses given, class → count (shows misdiagnoses plainly).
    pub diagnoses: BTreeMap<String, usize>,
    /// Healthy at the end after a selfheal recovery step reported `recovered`.
    pub recovered: usize,
    /// Healthy at the end without any selfheal action (e.g. the kernel's OOM killer).
    pub healthy_without_selfheal: usize,
    /// Guest panicked or rebooted.
    pub rebooted: usize,
    /// Guest hung until the lab killed it.
    pub hung: usize,
    /// Alive at the end but the fault persisted.
    pub degraded: usize,
    /// Injections selfheal did not detect.
    pub missed: usize,
    /// Runs in which selfheal raised a detection before the injection
    /// (under the workload alone): a hint that a "detection" may be noise.
    pub runs_with_early_alarms: usize,
    /// No CPU is left for a user-space detector (reported, not a miss).
    pub undetectable_by_design: bool,
    /// Per threshold profile: detector (and `selfheal`, for the same runs) → latency.
    pub kernel: BTreeMap<String, BTreeMap<String, Latency>>,
    /// Guest restarted and served again (profiles that follow reboots).
    #[serde(default)]
    pub restarted: usize,
    /// Per profile: how the guest ended and the downtime.
    #[serde(default)]
    pub healing: BTreeMap<String, Healing>,
}

/// One class under one profile: how the guest ended, and its downtime.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Healing {
    /// Injections.
    pub runs: usize,
    /// Healthy after a selfheal recovery step that reported `recovered`
    /// (or `mitigated`), without a restart.
    pub in_place: usize,
    /// Healthy without any selfheal step and without a restart.
    pub healthy_unaided: usize,
    /// Restarted and served again, by kind (`controlled`, `kernel_panic`,
    /// `watchdog`, `other`).
    pub restarted: BTreeMap<String, usize>,
    /// Controlled restarts whose next boot recorded a `restart` event
    /// naming the incident.
    pub restart_recorded: usize,
    /// Not serving at the end: hung, alive with the fault, or rebooted and
    /// not back.
    pub not_restored: usize,
    /// Downtime over the runs that served again (`detected` = those runs).
    pub downtime: Latency,
    /// Mean downtime of the runs healthy in place, ms.
    pub mean_in_place_ms: Option<f64>,
    /// Mean downtime of the runs restarted (any kind), ms.
    pub mean_restart_ms: Option<f64>,
    /// Median time from the fault to selfheal's first detection, ms.
    pub detect_median_ms: Option<f64>,
    /// Runs not handled in which the kernel dated a lockup of a CPU the
    /// fault does not occupy to within 2 s of the fault
    /// ([`RunRecord::left_no_cpu`]): no CPU was left for user space.
    #[serde(default)]
    pub no_cpu_left: usize,
}

impl Healing {
    /// Restarts of `kind` that served again.
    pub fn restarted_by(&self, kind: RestartKind) -> usize {
        self.restarted.get(kind.name()).copied().unwrap_or(0)
    }

    /// Handled: healthy in place after selfheal acted, or restarted under control.
    pub fn handled(&self) -> usize {
        self.in_place + self.restarted_by(RestartKind::Controlled)
    }

    /// Restored by any means (in place, unaided, any restart).
    pub fn restored(&self) -> usize {
        self.in_place + self.healthy_unaided + self.restarted.values().sum::<usize>()
    }
}

/// The healing summary of runs (all of one class and one profile).
pub fn healing(rs: &[&RunRecord]) -> Healing {
    let mut h = Healing {
        runs: rs.len(),
        ..Healing::default()
    };
    let mean = |v: &[i64]| (!v.is_empty()).then(|| v.iter().sum::<i64>() as f64 / v.len() as f64);
    let (mut in_place, mut restarts, mut all, mut detect) = (vec![], vec![], vec![], vec![]);
    for r in rs {
        if let Some(d) = r.selfheal.detect_ms {
            detect.push(d);
        }
        match r.outcome {
            Outcome::Healthy if r.selfheal.recover_ms.is_some() => h.in_place += 1,
            Outcome::Healthy => h.healthy_unaided += 1,
            Outcome::Restarted => {
                let kind = r.restart.unwrap_or(RestartKind::Other);
                *h.restarted.entry(kind.name().to_string()).or_insert(0) += 1;
                if kind == RestartKind::Controlled && r.restart_recorded {
                    h.restart_recorded += 1;
                }
            }
            Outcome::Degraded | Outcome::Rebooted | Outcome::Hung => h.not_restored += 1,
        }
        let handled = (r.outcome == Outcome::Healthy && r.selfheal.recover_ms.is_some())
            || (r.outcome == Outcome::Restarted && r.restart == Some(RestartKind::Controlled));
        if !handled && r.left_no_cpu() {
            h.no_cpu_left += 1;
        }
        if let Some(d) = r.downtime_ms {
            all.push(d);
            match r.outcome {
                Outcome::Restarted => restarts.push(d),
                _ => in_place.push(d),
            }
        }
    }
    h.mean_in_place_ms = mean(&in_place);
    h.mean_restart_ms = mean(&restarts);
    detect.sort_unstable();
    h.detect_median_ms = median(&detect);
    h.downtime = Latency::of(all, rs.len());
    h
}

/// One workload's fault-free runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultFreeSummary {
    /// The workload.
    pub workload: Workload,
    /// Runs with selfheal.
    pub runs_with: usize,
    /// Runs without selfheal.
    pub runs_without: usize,
    /// Runs with selfheal that had any detection event (false positives).
    pub false_positive_runs: usize,
    /// Detection events over all runs with selfheal.
    pub false_positive_events: usize,
    /// Mean throughput without selfheal, ops/s.
    pub ops_per_s_without: Option<f64>,
    /// Mean throughput with selfheal, ops/s.
    pub ops_per_s_with: Option<f64>,
    /// Throughput lost to selfheal, % (negative = faster with it; noise).
    pub overhead_pct: Option<f64>,
    /// selfheal's mean CPU use, % of one CPU.
    pub selfheal_cpu_pct: Option<f64>,
    /// Kernel detector reports in these fault-free runs, detector → count.
    pub kernel_reports: BTreeMap<String, usize>,
}

/// Facts about the run as a whole.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// UTC date and time the run started.
    pub started_utc: String,
    /// The command line.
    pub command: String,
    /// Host wall time of the whole run, s (setup included).
    pub duration_s: f64,
    /// PRNG seed of the plan.
    pub seed: u64,
    /// Guest kernel release and package version.
    pub kernel: String,
    /// QEMU accelerator and why.
    pub accel: String,
    /// Guest vCPUs and memory.
    pub guest: String,
    /// Where selfheal came from and its SHA256.
    pub selfheal: String,
    /// The config under test and its SHA256.
    pub config: String,
    /// The binary was the placeholder: the numbers are the lab's plumbing only.
    pub placeholder: bool,
    /// Relevant guest kernel config options.
    pub kernel_features: Vec<(String, String)>,
    /// Free-form notes (setup messages, caveats).
    pub notes: Vec<String>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// About the run.
    pub meta: Meta,
    /// Per fault class.
    pub classes: Vec<ClassSummary>,
    /// Per workload, fault-free.
    pub fault_free: Vec<FaultFreeSummary>,
    /// Every run, traceable to its logs.
    pub runs: Vec<RunRecord>,
    /// The `vm-rollback` profile's runs, when there are any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmSummary>,
}

/// One fault class under the `vm-rollback` profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VmClassRow {
    /// The class.
    pub class: Option<FaultClass>,
    /// Runs of the class.
    pub runs: usize,
    /// Runs whose trigger the lab sent and the guest injected.
    pub injected: usize,
    /// Runs `selfheal vm` rolled back at least once.
    pub rolled_back: usize,
    /// Runs rolled back to before the fault.
    #[serde(default)]
    pub undone: usize,
    /// Rollbacks after the one that undid the fault, summed.
    #[serde(default)]
    pub extra_rollbacks: u32,
    /// Rollbacks before the trigger was sent (false positives), summed.
    #[serde(default)]
    pub rollbacks_before_trigger: u32,
    /// Rolled back, then served on without a reboot.
    pub recovered_by_rollback: usize,
    /// Served on without a reboot, rolled back or not (the guest's own
    /// selfheal may clear a fault first).
    pub served_without_reboot: usize,
    /// QEMU restarted or the guest rebooted.
    pub restarted: usize,
    /// What `selfheal vm` acted on first, name → runs.
    pub triggers: BTreeMap<String, usize>,
    /// Trigger → `selfheal vm`'s decision, over the runs it acted in.
    pub detect: Latency,
    /// Trigger → serving again after the last rollback.
    pub fault_to_serving: Latency,
    /// Rollbacks per rolled-back run, summed.
    pub rollbacks: u32,
}

/// Guest throughput with and without the host's checkpoints, one workload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VmOverhead {
    /// The workload.
    pub workload: Option<Workload>,
    /// Runs with checkpoints.
    pub runs_with: usize,
    /// Runs without.
    pub runs_without: usize,
    /// Mean ops/s with checkpoints.
    pub ops_per_s_with: Option<f64>,
    /// Mean ops/s without.
    pub ops_per_s_without: Option<f64>,
    /// Throughput lost to checkpoints, % (negative: faster with them).
    pub overhead_pct: Option<f64>,
    /// Per pair (same round), % lost.
    pub pair_overheads_pct: Vec<f64>,
    /// Rollbacks `selfheal vm` did in these fault-free runs (on the guest's
    /// own diagnoses: false positives that cost a rollback).
    #[serde(default)]
    pub rollbacks: u32,
    /// Guest selfheal detection events in these runs (false positives).
    #[serde(default)]
    pub guest_false_alarms: usize,
}

/// The `vm-rollback` profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VmSummary {
    /// Per class.
    pub classes: Vec<VmClassRow>,
    /// Per workload, fault-free pairs.
    pub overhead: Vec<VmOverhead>,
}

/// The `vm-rollback` summary of `runs` (None without such runs).
pub fn summarize_vm(runs: &[RunRecord]) -> Option<VmSummary> {
    let vm: Vec<&RunRecord> = runs
        .iter()
        .filter(|r| r.scenario.profile == KernelProfile::VmRollback && r.vm.is_some())
        .collect();
    if vm.is_empty() {
        return None;
    }
    let mut out = VmSummary::default();
    for &class in FaultClass::ALL {
        let rs: Vec<&crate::analyze::vm::VmResult> = vm
            .iter()
            .filter(|r| r.scenario.class == Some(class))
            .filter_map(|r| r.vm.as_ref())
            .collect();
        if rs.is_empty() {
            continue;
        }
        let mut row = VmClassRow {
            class: Some(class),
            runs: rs.len(),
            ..VmClassRow::default()
        };
        let (mut detect, mut serve) = (vec![], vec![]);
        for v in &rs {
            row.injected += usize::from(v.triggered && v.injected);
            row.rolled_back += usize::from(v.rollbacks > 0);
            row.undone += usize::from(v.undone);
            row.extra_rollbacks += v.extra_rollbacks;
            row.rollbacks_before_trigger += v.rollbacks_before_trigger;
            row.rollbacks += v.rollbacks;
            row.recovered_by_rollback += usize::from(v.recovered_by_rollback());
            row.served_without_reboot += usize::from(v.served_without_reboot);
            row.restarted += usize::from(v.restarted);
            if let Some(t) = &v.trigger {
                *row.triggers.entry(t.clone()).or_insert(0) += 1;
            }
            detect.extend(v.detect_ms);
            if v.recovered_by_rollback() {
                serve.extend(v.fault_to_serving_ms);
            }
        }
        row.detect = Latency::of(detect, row.injected);
        row.fault_to_serving = Latency::of(serve, row.rolled_back);
        out.classes.push(row);
    }
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    for &w in Workload::ALL {
        let free: Vec<&&RunRecord> = vm
            .iter()
            .filter(|r| r.scenario.class.is_none() && r.scenario.workload == w && r.booted)
            .collect();
        if free.is_empty() {
            continue;
        }
        let ops = |off: bool| -> Vec<(String, f64)> {
            free.iter()
                .filter(|r| r.scenario.vm_checkpoints_off == off)
                .filter_map(|r| {
                    let round = r.scenario.id.rsplit('-').next().unwrap_or("").to_string();
                    Some((round, r.ops_per_s()?))
                })
                .collect()
        };
        let (with, without) = (ops(false), ops(true));
        let vals = |v: &[(String, f64)]| v.iter().map(|x| x.1).collect::<Vec<_>>();
        let (a, b) = (mean(&vals(&with)), mean(&vals(&without)));
        out.overhead.push(VmOverhead {
            workload: Some(w),
            runs_with: with.len(),
            runs_without: without.len(),
            ops_per_s_with: a,
            ops_per_s_without: b,
            overhead_pct: match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => Some((1.0 - a / b) * 100.0),
                _ => None,
            },
            rollbacks: free
                .iter()
                .filter_map(|r| r.vm.as_ref())
                .map(|v| v.rollbacks)
                .sum(),
            guest_false_alarms: free.iter().map(|r| r.selfheal.false_alarms).sum(),
            pair_overheads_pct: with
                .iter()
                .filter_map(|(round, a)| {
                    let b = without.iter().find(|x| &x.0 == round)?.1;
                    (b > 0.0).then(|| (1.0 - a / b) * 100.0)
                })
                .collect(),
        });
    }
    Some(out)
}

/// Builds the summaries from scored runs.
pub fn summarize(meta: Meta, runs: Vec<RunRecord>) -> Report {
    let mut classes = Vec::new();
    for &class in FaultClass::ALL {
        let rs: Vec<&RunRecord> = runs
            .iter()
            .filter(|r| r.scenario.class == Some(class) && r.booted && r.fault_start_ms.is_some())
            .collect();
        if rs.is_empty() {
            continue;
        }
        classes.push(summarize_class(class, &rs));
    }
    let mut fault_free = Vec::new();
    for &w in Workload::ALL {
        let with: Vec<&RunRecord> = runs
            .iter()
            .filter(|r| {
                r.scenario.class.is_none()
                    && r.scenario.workload == w
                    && r.scenario.selfheal
                    && r.scenario.profile != KernelProfile::VmRollback
                    && r.booted
            })
            .collect();
        let without: Vec<&RunRecord> = runs
            .iter()
            .filter(|r| {
                r.scenario.class.is_none()
                    && r.scenario.workload == w
                    && !r.scenario.selfheal
                    && r.scenario.profile != KernelProfile::VmRollback
                    && r.booted
            })
            .collect();
        if with.is_empty() && without.is_empty() {
            continue;
        }
        let mean = |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        let ops_with = mean(with.iter().filter_map(|r| r.ops_per_s()).collect());
        let ops_without = mean(without.iter().filter_map(|r| r.ops_per_s()).collect());
        let mut kernel_reports = BTreeMap::new();
        for r in with.iter().chain(&without) {
            for (k, n) in &r.kernel_false_alarms {
                *kernel_reports.entry(k.clone()).or_insert(0) += n;
            }
        }
        fault_free.push(FaultFreeSummary {
            workload: w,
            runs_with: with.len(),
            runs_without: without.len(),
            false_positive_runs: with.iter().filter(|r| r.selfheal.false_alarms > 0).count(),
            false_positive_events: with.iter().map(|r| r.selfheal.false_alarms).sum(),
            ops_per_s_without: ops_without,
            ops_per_s_with: ops_with,
            overhead_pct: match (ops_with, ops_without) {
                (Some(a), Some(b)) if b > 0.0 => Some((1.0 - a / b) * 100.0),
                _ => None,
            },
            selfheal_cpu_pct: mean(with.iter().filter_map(|r| r.selfheal.cpu_pct).collect()),
            kernel_reports,
        });
    }
    let vm = summarize_vm(&runs);
    Report {
        meta,
        classes,
        fault_free,
        runs,
        vm,
    }
}

fn summarize_class(class: FaultClass, rs: &[&RunRecord]) -> ClassSummary {
    // selfheal's columns count the runs it ran in; outcomes count every run.
    let with: Vec<&RunRecord> = rs.iter().copied().filter(|r| r.scenario.selfheal).collect();
    let n = with.len();
    let detections: Vec<i64> = with.iter().filter_map(|r| r.selfheal.detect_ms).collect();
    let mut diagnoses = BTreeMap::new();
    for r in rs {
        if let Some(d) = &r.selfheal.diagnosis {
            *diagnoses.entry(d.clone()).or_insert(0) += 1;
        }
    }
    let count = |f: &dyn Fn(&RunRecord) -> bool| rs.iter().filter(|r| f(r)).count();
    let count_with = |f: &dyn Fn(&RunRecord) -> bool| with.iter().filter(|r| f(r)).count();
    let mut kernel = BTreeMap::new();
    let mut healings = BTreeMap::new();
    for &profile in KernelProfile::ALL {
        let prs: Vec<&&RunRecord> = rs
            .iter()
            .filter(|r| r.scenario.profile == profile)
            .collect();
        if prs.is_empty() {
            continue;
        }
        healings.insert(
            profile.name().to_string(),
            healing(&prs.iter().map(|r| **r).collect::<Vec<_>>()),
        );
        let mut per = BTreeMap::new();
        // selfheal's own row for the same runs, so each line compares like with like.
        let own: Vec<i64> = prs.iter().filter_map(|r| r.selfheal.detect_ms).collect();
        let ran = prs.iter().filter(|r| r.scenario.selfheal).count();
        per.insert("selfheal".to_string(), Latency::of(own, ran));
        for d in KernelDetector::ALL {
            let lat: Vec<i64> = prs
                .iter()
                .filter_map(|r| r.kernel.get(d.name()).map(|h| h.latency_ms))
                .collect();
            per.insert(d.name().to_string(), Latency::of(lat, prs.len()));
        }
        kernel.insert(profile.name().to_string(), per);
    }
    let detected = detections.len();
    ClassSummary {
        class,
        injections: rs.len(),
        selfheal: Latency::of(detections, n),
        diagnosed: count_with(&|r| r.selfheal.diagnosis.is_some()),
        diagnosed_correctly: count_with(&|r| r.selfheal.diagnosed_correctly == Some(true)),
        culprit_correct: count_with(&|r| r.selfheal.culprit_correct == Some(true)),
        diagnoses,
        recovered: count(&|r| r.outcome == Outcome::Healthy && r.selfheal.recover_ms.is_some()),
        healthy_without_selfheal: count(&|r| {
            r.outcome == Outcome::Healthy && r.selfheal.recover_ms.is_none()
        }),
        rebooted: count(&|r| r.outcome == Outcome::Rebooted),
        hung: count(&|r| r.outcome == Outcome::Hung),
        degraded: count(&|r| r.outcome == Outcome::Degraded),
        missed: n - detected,
        runs_with_early_alarms: count_with(&|r| r.selfheal.false_alarms > 0),
        undetectable_by_design: rs.iter().all(|r| !r.detectable()),
        kernel,
        restarted: count(&|r| r.outcome == Outcome::Restarted),
        healing: healings,
    }
}

mod markdown;
pub use markdown::{markdown, plain_findings};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p95_follow_their_definitions() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[5]), Some(5.0));
        assert_eq!(median(&[1, 3]), Some(2.0));
        assert_eq!(median(&[1, 2, 9]), Some(2.0));
        let v: Vec<i64> = (1..=20).collect();
        assert_eq!(percentile(&v, 95.0), Some(19.0));
        assert_eq!(percentile(&v, 100.0), Some(20.0));
        assert_eq!(percentile(&[7], 95.0), Some(7.0));
        let l = Latency::of(vec![300, 100, 200], 5);
        assert_eq!((l.detected, l.runs, l.median_ms), (3, 5, Some(200.0)));
    }

    fn vm_run(id: &str, class: Option<FaultClass>, off: bool, ops: Option<u64>) -> RunRecord {
        use crate::analyze::{vm::VmResult, QemuExit};
        use crate::scenario::Scenario;
        RunRecord {
            scenario: Scenario {
                id: id.into(),
                class,
                workload: Workload::Mix,
                profile: KernelProfile::VmRollback,
                selfheal: true,
                dry_run: false,
                inject_ms: 3000,
                observe_s: 15,
                workload_s: 30,
                fault_cpu: 1,
                calibrate_s: 0,
                second_observe_s: 0,
                vm_checkpoints_off: off,
            },
            log_dir: format!("runs/{id}"),
            host_ms: 1,
            qemu_exit: QemuExit::Exited,
            booted: true,
            guest_cpus: Some(2),
            fault_start_ms: Some(1),
            fault_confirmed: true,
            selfheal: SelfhealResultDefault::default(),
            kernel: BTreeMap::new(),
            kernel_false_alarms: BTreeMap::new(),
            outcome: Outcome::Healthy,
            outcome_note: String::new(),
            workload_ops: ops,
            workload_elapsed_ms: ops.map(|_| 10_000),
            errors: vec![],
            boots: 1,
            restart: None,
            restart_recorded: false,
            downtime_ms: None,
            downtime_clock: None,
            vm: Some(VmResult {
                checkpoints: !off,
                triggered: class.is_some(),
                injected: class.is_some(),
                ..VmResult::default()
            }),
            other_cpu_lockup: None,
        }
    }

    use crate::analyze::SelfhealResult as SelfhealResultDefault;

    #[test]
    fn vm_summary_counts_rollbacks_and_pairs_the_overhead_by_round() {
        let mut a = vm_run("spin_abba-001", Some(FaultClass::SpinAbba), false, None);
        {
            let v = a.vm.as_mut().unwrap();
            v.rollbacks = 2;
            v.undone = true;
            v.extra_rollbacks = 1;
            v.served_without_reboot = true;
            v.heartbeat_back = true;
            v.trigger = Some("hang".into());
            v.detect_ms = Some(3000);
            v.fault_to_serving_ms = Some(4200);
        }
        let mut b = vm_run("spin_abba-002", Some(FaultClass::SpinAbba), false, None);
        {
            let v = b.vm.as_mut().unwrap();
            v.rollbacks = 1;
            v.restarted = true;
            v.trigger = Some("hang".into());
            v.fault_to_serving_ms = Some(99_000);
        }
        let runs = vec![
            a,
            b,
            vm_run("none-mix-nockpt-001", None, true, Some(1000)),
            vm_run("none-mix-ckpt-001", None, false, Some(900)),
            vm_run("none-mix-nockpt-002", None, true, Some(2000)),
            vm_run("none-mix-ckpt-002", None, false, Some(2000)),
        ];
        let r = summarize(Meta::default(), runs);
        // The pairs are not fault-free selfheal-vs-baseline runs.
        assert!(r.fault_free.is_empty(), "{:?}", r.fault_free);
        let vm = r.vm.as_ref().unwrap();
        let c = &vm.classes[0];
        assert_eq!(
            (c.runs, c.injected, c.rolled_back, c.rollbacks),
            (2, 2, 2, 3)
        );
        assert_eq!((c.recovered_by_rollback, c.restarted), (1, 1));
        assert_eq!((c.undone, c.extra_rollbacks), (1, 1));
        assert_eq!(c.triggers.get("hang"), Some(&2));
        // Only the run that served on counts for fault → serving.
        assert_eq!(c.fault_to_serving.median_ms, Some(4200.0));
        let o = &vm.overhead[0];
        assert_eq!((o.runs_with, o.runs_without), (2, 2));
        // Means: with (90+200)/2 = 145, without (100+200)/2 = 150.
        assert!((o.overhead_pct.unwrap() - (1.0 - 145.0 / 150.0) * 100.0).abs() < 1e-9);
        assert_eq!(o.pair_overheads_pct.len(), 2);
        assert!((o.pair_overheads_pct[0] - 10.0).abs() < 1e-9);
        assert!(o.pair_overheads_pct[1].abs() < 1e-9);
        let md = markdown(&r);
        assert!(md.contains("## VM rollback"), "{md}");
        assert!(
            md.contains("| spin_abba | 2 (2) | 2 | 1 | 1 | 1 | 1 | hang: 2 |"),
            "{md}"
        );
        // Without vm-rollback runs there is no section.
        assert!(summarize_vm(&[]).is_none());
    }
}
