//! Aggregates scored runs into per-class and fault-free summaries, and
//! writes them as Markdown and JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::analyze::{Outcome, RunRecord};
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
    let n = rs.len();
    let detections: Vec<i64> = rs.iter().filter_map(|r| r.selfheal.detect_ms).collect();
    let mut diagnoses = BTreeMap::new();
    for r in rs {
        if let Some(d) = &r.selfheal.diagnosis {
            *diagnoses.entry(d.clone()).or_insert(0) += 1;
        }
    }
    let count = |f: &dyn Fn(&RunRecord) -> bool| rs.iter().filter(|r| f(r)).count();
    let mut kernel = BTreeMap::new();
    for profile in [KernelProfile::Default, KernelProfile::Tight] {
        let prs: Vec<&&RunRecord> = rs
            .iter()
            .filter(|r| r.scenario.profile == profile)
            .collect();
        if prs.is_empty() {
            continue;
        }
        let mut per = BTreeMap::new();
        // selfheal's own row for the same runs, so each line compares like with like.
        let own: Vec<i64> = prs.iter().filter_map(|r| r.selfheal.detect_ms).collect();
        per.insert("selfheal".to_string(), Latency::of(own, prs.len()));
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
        injections: n,
        selfheal: Latency::of(detections, n),
        diagnosed: count(&|r| r.selfheal.diagnosis.is_some()),
        diagnosed_correctly: count(&|r| r.selfheal.diagnosed_correctly == Some(true)),
        culprit_correct: count(&|r| r.selfheal.culprit_correct == Some(true)),
        diagnoses,
        recovered: count(&|r| r.outcome == Outcome::Healthy && r.selfheal.recover_ms.is_some()),
        healthy_without_selfheal: count(&|r| {
            r.outcome == Outcome::Healthy && r.selfheal.recover_ms.is_none()
        }),
        rebooted: count(&|r| r.outcome == Outcome::Rebooted),
        hung: count(&|r| r.outcome == Outcome::Hung),
        degraded: count(&|r| r.outcome == Outcome::Degraded),
        missed: n - detected,
        runs_with_early_alarms: count(&|r| r.selfheal.false_alarms > 0),
        undetectable_by_design: rs.iter().all(|r| !r.detectable()),
        kernel,
    }
}

fn ms(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(x) if x >= 10_000.0 => format!("{:.1} s", x / 1000.0),
        Some(x) if x >= 1000.0 => format!("{:.2} s", x / 1000.0),
        Some(x) => format!("{x:.0} ms"),
    }
}

fn pct(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".into(), |x| format!("{x:.digits$} %"))
}

/// The report as Markdown.
pub fn markdown(r: &Report) -> String {
    let m = &r.meta;
    let mut s = String::new();
    let _ = writeln!(s, "# selfheal hang lab results\n");
    if m.placeholder {
        let _ = writeln!(
            s,
            "> **PLACEHOLDER RUN.** The guest ran the lab's stand-in, not selfheal: every selfheal column \
             below is empty by construction. Only the kernel detector columns and the lab's plumbing are real.\n"
        );
    }
    let _ = writeln!(
        s,
        "- started: {} (UTC), duration {:.0} s",
        m.started_utc, m.duration_s
    );
    let _ = writeln!(s, "- command: `{}` (seed {})", m.command, m.seed);
    let _ = writeln!(s, "- guest: {}, kernel {}, {}", m.guest, m.kernel, m.accel);
    let _ = writeln!(s, "- selfheal: {}", m.selfheal);
    let _ = writeln!(s, "- config under test: {}", m.config);
    let feats: Vec<String> = m
        .kernel_features
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let _ = writeln!(s, "- guest kernel config: {}", feats.join(", "));
    let _ = writeln!(
        s,
        "- raw serial logs: `runs/<id>/` beside this file; `results.json` has every run\n"
    );

    let _ = writeln!(s, "## Fault injections: selfheal\n");
    let _ = writeln!(
        s,
        "Latency is from the fault's start (the module's own start line, or the injection marker for \
         user-space faults) to selfheal's first alert, hang diagnosis, watchdog or recovery event, on the \
         guest's clock. Events naming another CPU than the one a pinned fault occupies are not credited. \
         `runs with alarms before injection` counts runs where selfheal already alerted under the workload \
         alone: there a detection may be the workload, not the fault.\n"
    );
    let _ = writeln!(
        s,
        "| class | fault | injections | detected | median | p95 | diagnosed correctly | culprit right | \
         recovered w/o reboot | rebooted | hung (lab reset) | alive, fault persists | missed | \
         runs with alarms before injection |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for c in &r.classes {
        let missed = if c.undetectable_by_design {
            format!("{} (all CPUs stalled: undetectable by design)", c.missed)
        } else {
            c.missed.to_string()
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {}/{} | {}/{} | {} | {} | {} | {} | {} | {} |",
            c.class,
            c.class.describe(),
            c.injections,
            c.selfheal.detected,
            ms(c.selfheal.median_ms),
            ms(c.selfheal.p95_ms),
            c.diagnosed_correctly,
            c.injections,
            c.culprit_correct,
            c.injections,
            c.recovered,
            c.rebooted,
            c.hung,
            c.degraded,
            missed,
            c.runs_with_early_alarms
        );
    }
    let _ = writeln!(s);
    let problems = plain_findings(r);
    if !problems.is_empty() {
        let _ = writeln!(s, "**Where selfheal missed or misdiagnosed:**\n");
        for p in problems {
            let _ = writeln!(s, "- {p}");
        }
        let _ = writeln!(s);
    }

    let _ = writeln!(s, "## Fault injections: the kernel's own detectors\n");
    let _ = writeln!(
        s,
        "Each cell: runs that reported / runs, median latency. Profiles: default = soft lockup 20 s, \
         hung task 120 s (reported 120–240 s after blocking), RCU stall 21 s; tight = watchdog_thresh=1 \
         (soft lockup 2 s), hung_task_timeout_secs=1, rcu_cpu_stall_timeout=3. The hard-lockup detector \
         needs a perf NMI, which a TCG guest lacks (`NMI watchdog: Perf NMI watchdog permanently disabled`).\n"
    );
    let dets: Vec<&str> = KernelDetector::ALL.iter().map(|d| d.name()).collect();
    let _ = writeln!(s, "| class | profile | selfheal | {} |", dets.join(" | "));
    let _ = writeln!(s, "|---|---|---|{}", "---|".repeat(dets.len()));
    for c in &r.classes {
        for (profile, per) in &c.kernel {
            let cells: Vec<String> = dets
                .iter()
                .map(|d| {
                    let l = &per[*d];
                    format!("{}/{}, {}", l.detected, l.runs, ms(l.median_ms))
                })
                .collect();
            let own = per.get("selfheal").cloned().unwrap_or_default();
            let _ = writeln!(
                s,
                "| {} | {} | {}/{}, {} | {} |",
                c.class,
                profile,
                own.detected,
                own.runs,
                ms(own.median_ms),
                cells.join(" | ")
            );
        }
    }
    let _ = writeln!(s, "\n![detection latency per class](latency.svg)\n");

    let _ = writeln!(s, "## Fault-free runs: false positives and overhead\n");
    let _ = writeln!(
        s,
        "| workload | runs with / without selfheal | runs with a selfheal false positive | FP events | \
         ops/s without | ops/s with | throughput overhead | selfheal CPU (% of one core) | kernel reports |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for f in &r.fault_free {
        let kr: Vec<String> = f
            .kernel_reports
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        let _ = writeln!(
            s,
            "| {} | {} / {} | {} | {} | {} | {} | {} | {} | {} |",
            f.workload.name(),
            f.runs_with,
            f.runs_without,
            f.false_positive_runs,
            f.false_positive_events,
            f.ops_per_s_without
                .map_or("—".into(), |v| format!("{v:.1}")),
            f.ops_per_s_with.map_or("—".into(), |v| format!("{v:.1}")),
            pct(f.overhead_pct, 1),
            pct(f.selfheal_cpu_pct, 2),
            if kr.is_empty() {
                "none".into()
            } else {
                kr.join(", ")
            }
        );
    }
    let _ = writeln!(
        s,
        "\nThroughput overhead compares separate guest boots under TCG on a shared host; differences of a \
         few percent either way are noise. selfheal's own CPU time (utime+stime over its lifetime) is the \
         sharper overhead figure.\n"
    );

    let _ = writeln!(s, "## Every run\n");
    let _ = writeln!(s, "| run | workload | profile | selfheal detect | diagnosis | culprit | recovery | outcome | kernel first | logs |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    for run in &r.runs {
        let first_kernel = run
            .kernel
            .iter()
            .min_by_key(|(_, h)| h.latency_ms)
            .map_or("—".into(), |(k, h)| {
                format!("{k} {}", ms(Some(h.latency_ms as f64)))
            });
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {:?}: {} | {} | [logs]({}/) |",
            run.scenario.id,
            run.scenario.workload.name(),
            run.scenario.profile.name(),
            run.selfheal.detect_ms.map_or("—".into(), |v| format!(
                "{} ({})",
                ms(Some(v as f64)),
                run.selfheal.detect_by.as_deref().unwrap_or("")
            )),
            run.selfheal.diagnosis.as_deref().unwrap_or("—"),
            run.selfheal.culprit.as_deref().unwrap_or("—"),
            run.selfheal.recovery.as_deref().unwrap_or("—"),
            run.outcome,
            run.outcome_note.replace('|', "/"),
            first_kernel,
            run.log_dir
        );
    }
    if !m.notes.is_empty() {
        let _ = writeln!(s, "\n## Notes\n");
        for n in &m.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}

/// Plain sentences for every class selfheal missed or misdiagnosed.
pub fn plain_findings(r: &Report) -> Vec<String> {
    let mut out = Vec::new();
    for c in &r.classes {
        if c.undetectable_by_design {
            out.push(format!(
                "{}: every CPU is stalled, so no user-space detector can run; selfheal detected {}/{} (expected 0).",
                c.class, c.selfheal.detected, c.injections
            ));
            continue;
        }
        if c.missed > 0 {
            out.push(format!(
                "{}: selfheal missed {} of {} injections.",
                c.class, c.missed, c.injections
            ));
        }
        let wrong: Vec<String> = c
            .diagnoses
            .iter()
            .filter(|(d, _)| d.as_str() != c.class.expected_diagnosis())
            .map(|(d, n)| format!("{d} ×{n}"))
            .collect();
        if !wrong.is_empty() {
            out.push(format!(
                "{}: misdiagnosed as {} (expected {}).",
                c.class,
                wrong.join(", "),
                c.class.expected_diagnosis()
            ));
        }
        if c.diagnosed < c.injections && c.missed < c.injections {
            out.push(format!(
                "{}: {} of {} injections got no diagnosis event.",
                c.class,
                c.injections - c.diagnosed,
                c.injections
            ));
        }
    }
    out
}

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

    #[test]
    fn durations_read_naturally() {
        assert_eq!(ms(Some(85.0)), "85 ms");
        assert_eq!(ms(Some(2345.0)), "2.35 s");
        assert_eq!(ms(Some(125_000.0)), "125.0 s");
        assert_eq!(ms(None), "—");
    }
}
