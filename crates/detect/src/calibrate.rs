//! Calibration: learn this machine's normal ranges and write rule thresholds.
//!
//! SHFH initialises its acceptable ranges per platform. We sample the machine
//! under its normal load and, for every rule condition, find the most extreme
//! value the metric took *in the regime where the rule's other conditions
//! held* (for `kernel_spin`: the highest system time seen while user time was
//! below 4 %). A threshold is only ever widened, never made more sensitive
//! than the default: calibration removes false alarms, it does not add them.

use std::fmt::Write as _;

use selfheal_config::{Comparison, Condition, Rule};
use selfheal_sampler::{CpuMetric, DiskMetric, MetricRef, Sample, Scope, SystemMetric};

/// Rows kept per scope; beyond this, further samples are ignored (about an
/// hour at 100 ms on a 64-CPU machine).
pub const MAX_ROWS: usize = 2_000_000;

/// Headroom added beyond the observed extreme.
pub const DEFAULT_MARGIN: f64 = 0.10;

/// Collected samples, one row per instance per sample.
#[derive(Debug, Default, Clone)]
pub struct Calibrator {
    system: Vec<[f64; SystemMetric::COUNT]>,
    cpu: Vec<[f64; CpuMetric::COUNT]>,
    disk: Vec<[f64; DiskMetric::COUNT]>,
    samples: usize,
    truncated: bool,
}

/// Range of one metric over the calibration run.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSummary {
    /// Metric name.
    pub name: &'static str,
    /// Finite values seen.
    pub count: usize,
    /// Smallest.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// A threshold calibration changed or kept.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdChange {
    /// The metric.
    pub metric: &'static str,
    /// The threshold before.
    pub old: f64,
    /// The threshold after.
    pub new: f64,
    /// The extreme value observed in the rule's regime, if any was.
    pub observed: Option<f64>,
    /// True when the new threshold cannot be crossed (a percentage pushed
    /// to 100 with `above`): the rule would never fire.
    pub saturated: bool,
}

/// A rule after calibration.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibratedRule {
    /// The rule with calibrated thresholds.
    pub rule: Rule,
    /// One entry per condition.
    pub changes: Vec<ThresholdChange>,
}

impl Calibrator {
    /// An empty calibrator.
    pub fn new() -> Calibrator {
        Calibrator::default()
    }

    /// Records one sample.
    pub fn add(&mut self, s: &Sample) {
        self.samples += 1;
        if self.system.len() >= MAX_ROWS || self.cpu.len() + s.cpus.len() > MAX_ROWS {
            self.truncated = true;
            return;
        }
        self.system.push(s.system);
        self.cpu
            .extend(s.cpus.iter().filter(|c| c.iter().any(|v| v.is_finite())));
        self.disk.extend(s.disks.iter().copied());
    }

    /// Samples recorded.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// True when [`MAX_ROWS`] was reached and later samples were ignored.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    fn column(&self, m: MetricRef) -> Vec<f64> {
        let mut v: Vec<f64> = match m {
            MetricRef::System(x) => self.system.iter().map(|r| r[x.index()]).collect(),
            MetricRef::Cpu(x) => self.cpu.iter().map(|r| r[x.index()]).collect(),
            MetricRef::Disk(x) => self.disk.iter().map(|r| r[x.index()]).collect(),
        };
        v.retain(|x| x.is_finite());
        v
    }

    /// Summary of every metric that had values.
    pub fn summary(&self) -> Vec<MetricSummary> {
        let all = SystemMetric::ALL
            .iter()
            .map(|m| MetricRef::System(*m))
            .chain(CpuMetric::ALL.iter().map(|m| MetricRef::Cpu(*m)))
            .chain(DiskMetric::ALL.iter().map(|m| MetricRef::Disk(*m)));
        all.filter_map(|m| {
            let mut v = self.column(m);
            if v.is_empty() {
                return None;
            }
            v.sort_by(f64::total_cmp);
            let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
            Some(MetricSummary {
                name: m.name(),
                count: v.len(),
                min: v[0],
                p50: q(0.5),
                p99: q(0.99),
                max: v[v.len() - 1],
            })
        })
        .collect()
    }

    /// The extreme of condition `k`'s metric over rows where every other
    /// condition of `rule` holds: max for upper bounds, min for lower ones.
    fn regime_extreme(&self, rule: &Rule, k: usize) -> Option<f64> {
        let others: Vec<&Condition> = rule
            .when
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != k)
            .map(|(_, c)| c)
            .collect();
        let target = &rule.when[k];
        let get = |row: &dyn Fn(MetricRef) -> f64| -> Option<f64> {
            if others
                .iter()
                .all(|c| c.cmp.holds(row(c.metric), c.threshold))
            {
                let v = row(target.metric);
                v.is_finite().then_some(v)
            } else {
                None
            }
        };
        let values: Vec<f64> = match rule.scope() {
            Scope::System => self
                .system
                .iter()
                .filter_map(|r| get(&|m| metric_of_system(r, m)))
                .collect(),
            Scope::PerCpu => self
                .cpu
                .iter()
                .filter_map(|r| get(&|m| metric_of_cpu(r, m)))
                .collect(),
            Scope::PerDisk => self
                .disk
                .iter()
                .filter_map(|r| get(&|m| metric_of_disk(r, m)))
                .collect(),
        };
        if target.cmp.is_upper() {
            values.into_iter().reduce(f64::max)
        } else {
            values.into_iter().reduce(f64::min)
        }
    }

    /// Widens each rule's thresholds to cover what was observed, plus
    /// `margin` (0.10 = 10 %).
    pub fn calibrate(&self, rules: &[Rule], margin: f64) -> Vec<CalibratedRule> {
        rules
            .iter()
            .map(|rule| {
                let mut out = rule.clone();
                let mut changes = Vec::new();
                for k in 0..rule.when.len() {
                    let c = rule.when[k];
                    let observed = self.regime_extreme(rule, k);
                    let (new, saturated) = widen(c, observed, margin);
                    out.when[k].threshold = new;
                    changes.push(ThresholdChange {
                        metric: c.metric.name(),
                        old: c.threshold,
                        new,
                        observed,
                        saturated,
                    });
                }
                CalibratedRule { rule: out, changes }
            })
            .collect()
    }
}

fn metric_of_system(r: &[f64; SystemMetric::COUNT], m: MetricRef) -> f64 {
    match m {
        MetricRef::System(x) => r[x.index()],
        _ => f64::NAN,
    }
}

fn metric_of_cpu(r: &[f64; CpuMetric::COUNT], m: MetricRef) -> f64 {
    match m {
        MetricRef::Cpu(x) => r[x.index()],
        _ => f64::NAN,
    }
}

fn metric_of_disk(r: &[f64; DiskMetric::COUNT], m: MetricRef) -> f64 {
    match m {
        MetricRef::Disk(x) => r[x.index()],
        _ => f64::NAN,
    }
}

/// The widened threshold for one condition.
fn widen(c: Condition, observed: Option<f64>, margin: f64) -> (f64, bool) {
    let Some(obs) = observed else {
        return (c.threshold, false);
    };
    let percent = c.metric.unit() == "percent";
    let round = |v: f64| (v * 100.0).round() / 100.0;
    if c.cmp.is_upper() {
        // Normal load reached `obs`: the alarm must sit above it.
        let mut new = c.threshold.max(round(obs * (1.0 + margin)));
        if !matches!(c.cmp, Comparison::Above) && new <= obs {
            new = round(obs + 0.01);
        }
        if percent && new >= 100.0 {
            return (100.0, matches!(c.cmp, Comparison::Above));
        }
        (new, false)
    } else {
        let new = c.threshold.min(round(obs / (1.0 + margin)));
        (
            new.max(0.0),
            new <= 0.0 && matches!(c.cmp, Comparison::Below),
        )
    }
}

/// Renders calibrated rules as a config fragment (only `[[rule]]` tables)
/// with the observations as comments.
pub fn render_fragment(
    calibrated: &[CalibratedRule],
    summary: &[MetricSummary],
    header: &str,
) -> String {
    let mut s = String::new();
    for line in header.lines() {
        let _ = writeln!(s, "# {line}");
    }
    let _ = writeln!(
        s,
        "#\n# Observed under normal load (min / p50 / p99 / max):"
    );
    for m in summary {
        let _ = writeln!(
            s,
            "#   {:<30} {:>12} {:>12} {:>12} {:>12}",
            m.name,
            fmt_num(m.min),
            fmt_num(m.p50),
            fmt_num(m.p99),
            fmt_num(m.max)
        );
    }
    for c in calibrated {
        let r = &c.rule;
        let _ = writeln!(
            s,
            "\n[[rule]]\nname = \"{}\"\nlevel = \"{}\"",
            r.name,
            r.level.as_str()
        );
        let _ = writeln!(s, "when = [");
        for (cond, ch) in r.when.iter().zip(&c.changes) {
            let note = match (ch.observed, ch.old == ch.new) {
                (None, _) => "regime not observed; default kept".to_string(),
                (Some(o), true) => format!("default kept; observed {}", fmt_num(o)),
                (Some(o), false) => format!("default {}; observed {}", fmt_num(ch.old), fmt_num(o)),
            };
            let sat = if ch.saturated {
                "; NOTE: normal load reaches this bound, the condition can no longer fire"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "  {{ metric = \"{}\", {} = {} }},  # {note}{sat}",
                cond.metric.name(),
                cond.cmp.key(),
                fmt_toml_float(cond.threshold)
            );
        }
        let _ = writeln!(s, "]\nsustain = \"{}\"", r.sustain);
        if !r.enabled {
            let _ = writeln!(s, "enabled = false");
        }
    }
    s
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 1e6 {
        format!("{v:.3e}")
    } else {
        format!("{v:.2}")
    }
}

fn fmt_toml_float(v: f64) -> String {
    let s = format!("{v}");
    if s.contains('.') || s.contains('e') {
        s
    } else {
        format!("{s}.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfheal_config::{default_rules, Config};
    use std::time::Duration;

    fn sample(sys: f64, usr: f64, run_per_cpu: f64) -> Sample {
        let mut s = Sample::with_cpus(2);
        s.interval = Duration::from_millis(100);
        for c in s.cpus.iter_mut() {
            c[CpuMetric::SystemPercent.index()] = sys;
            c[CpuMetric::UserPercent.index()] = usr;
            c[CpuMetric::IowaitPercent.index()] = 0.0;
            c[CpuMetric::AccountedPercent.index()] = 100.0;
        }
        s.system[SystemMetric::RunnableTasksPerCpu.index()] = run_per_cpu;
        s.system[SystemMetric::MemAvailablePercent.index()] = 70.0;
        s
    }

    #[test]
    fn widens_only_where_normal_load_reached() {
        let mut cal = Calibrator::new();
        for i in 0..100 {
            // Busy machine: run queue up to 5 per CPU; high sys with high usr
            // (not the kernel_spin regime); one sample of sys 60 % with usr 2 %.
            cal.add(&sample(40.0, 50.0, 1.0 + (i % 5) as f64));
        }
        cal.add(&sample(60.0, 2.0, 1.0));
        let out = cal.calibrate(&default_rules(), DEFAULT_MARGIN);
        let get = |name: &str| out.iter().find(|c| c.rule.name == name).unwrap();
        let run = get("run_queue_long");
        assert_eq!(run.changes[0].observed, Some(5.0));
        assert_eq!(run.rule.when[0].threshold, 5.5);
        // kernel_spin: sys observed 60 in the usr<4 regime → 66; usr's lower
        // bound observed 2 in the sys>50 regime → min(4, 2/1.1).
        let spin = get("kernel_spin");
        assert_eq!(spin.rule.when[0].threshold, 66.0);
        assert_eq!(spin.rule.when[1].threshold, 1.82);
        // The heavy run-queue rule is already above what was seen: kept.
        assert_eq!(get("run_queue_hang").rule.when[0].threshold, 10.0);
        // Memory never got low: kept, and said so.
        assert_eq!(get("memory_low").rule.when[0].threshold, 10.0);
    }

    #[test]
    fn saturated_percentage_is_flagged() {
        let mut cal = Calibrator::new();
        cal.add(&sample(99.0, 0.0, 1.0));
        let out = cal.calibrate(&default_rules(), DEFAULT_MARGIN);
        let spin = out.iter().find(|c| c.rule.name == "kernel_spin").unwrap();
        assert_eq!(spin.rule.when[0].threshold, 100.0);
        assert!(spin.changes[0].saturated);
    }

    #[test]
    fn fragment_parses_as_config() {
        let mut cal = Calibrator::new();
        for i in 0..50 {
            cal.add(&sample(10.0 + i as f64, 30.0, 4.0));
        }
        let out = cal.calibrate(&default_rules(), DEFAULT_MARGIN);
        let text = render_fragment(&out, &cal.summary(), "test calibration");
        let cfg = Config::parse(&text, std::path::Path::new("cal.toml")).unwrap();
        let rules = cfg.effective_rules();
        let run = rules.iter().find(|r| r.name == "run_queue_long").unwrap();
        assert_eq!(run.when[0].threshold, 4.4);
        assert_eq!(rules.len(), default_rules().len());
        assert!(text.contains("# test calibration"));
        assert!(text.contains("runnable_tasks_per_cpu"));
    }

    #[test]
    fn summary_quantiles() {
        let mut cal = Calibrator::new();
        for i in 0..=100 {
            cal.add(&sample(i as f64, 0.0, 1.0));
        }
        let sys = cal
            .summary()
            .into_iter()
            .find(|m| m.name == "cpu_system_percent")
            .unwrap();
        assert_eq!((sys.min, sys.p50, sys.max), (0.0, 50.0, 100.0));
        assert_eq!(sys.count, 202);
    }
}
