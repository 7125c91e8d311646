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
                    && r.booted
            })
            .collect();
        let without: Vec<&RunRecord> = runs
            .iter()
            .filter(|r| {
                r.scenario.class.is_none()
                    && r.scenario.workload == w
                    && !r.scenario.selfheal
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
    Report {
        meta,
        classes,
        fault_free,
        runs,
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
}
