//! SHFH's light detector: acceptable ranges per metric, evaluated on every
//! sample, raising an [`Alert`] when a range has been left for its sustain
//! time.

mod alert;
mod stats;
mod thread;

use std::time::{Duration, Instant};

use selfheal_config::{Comparison, Level, Rule};
use selfheal_sampler::{CpuMetric, MetricRef, Sample, Scope, MAX_DISKS};

pub use alert::{
    snapshot_details, snapshot_json, Alert, AlertDetails, AlertInstance, ConditionDetails,
    ReadAlertError, SnapshotDetails, MAX_CONDITIONS,
};
pub use stats::LightStats;
pub use thread::{attach_sample_hook, LightShared, LightThread, LightThreadConfig, SampleHook};

/// A rule prepared for allocation-free evaluation.
#[derive(Debug, Clone)]
struct Compiled {
    conds: [(MetricRef, Comparison, f64); MAX_CONDITIONS],
    n: usize,
    scope: Scope,
    level: Level,
    sustain: Duration,
    /// Per instance: start of the interval in which the rule began holding.
    since: Vec<Option<Instant>>,
    /// Per instance: when the alert was last raised in this episode.
    last_alert: Vec<Option<Instant>>,
}

/// A rule cannot be used by the light detector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError(pub String);

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RuleError {}

/// Evaluates rules against samples. All state is sized at construction.
#[derive(Debug, Clone)]
pub struct LightDetector {
    rules: Vec<Rule>,
    compiled: Vec<Compiled>,
    max_steal_percent: f64,
    repeat: Duration,
}

impl LightDetector {
    /// Prepares `rules` for a machine with `cpus` CPU slots.
    pub fn new(
        rules: Vec<Rule>,
        cpus: usize,
        max_steal_percent: f64,
        repeat: Duration,
    ) -> Result<LightDetector, RuleError> {
        if rules.len() > u16::MAX as usize {
            return Err(RuleError(format!("too many rules ({})", rules.len())));
        }
        let mut compiled = Vec::with_capacity(rules.len());
        for r in &rules {
            if r.when.is_empty() || r.when.len() > MAX_CONDITIONS {
                return Err(RuleError(format!(
                    "rule `{}` has {} conditions; a rule needs 1 to {MAX_CONDITIONS}",
                    r.name,
                    r.when.len()
                )));
            }
            let mut conds =
                [(r.when[0].metric, r.when[0].cmp, r.when[0].threshold); MAX_CONDITIONS];
            for (slot, c) in conds.iter_mut().zip(r.when.iter()) {
                *slot = (c.metric, c.cmp, c.threshold);
            }
            let instances = match r.scope() {
                Scope::System => 1,
                Scope::PerCpu => cpus,
                Scope::PerDisk => MAX_DISKS,
            };
            compiled.push(Compiled {
                conds,
                n: r.when.len(),
                scope: r.scope(),
                level: r.level,
                sustain: r.sustain.get(),
                since: vec![None; instances],
                last_alert: vec![None; instances],
            });
        }
        Ok(LightDetector {
            rules,
            compiled,
            max_steal_percent,
            repeat,
        })
    }

    /// The rules, in the order alerts refer to them by index.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Evaluates every rule on `sample`, calling `emit` for each alert.
    /// Allocation-free.
    ///
    /// A sample from an idle read (`stat_read` false: the sampler took
    /// /proc/uptime, which bounds each CPU's idle share but gives no other
    /// CPU share) is no new evidence: every rule keeps its state until the
    /// next sample that read /proc/stat, which covers its own interval
    /// (see `Sampler::sample`). An idle read follows a quiet one, where no
    /// default rule on CPU shares, the run queue or available memory can
    /// hold; memory pressure and swap rates change only at slow reads,
    /// which always read /proc/stat.
    pub fn evaluate(&mut self, sample: &Sample, emit: &mut dyn FnMut(Alert)) {
        if !sample.stat_read {
            return;
        }
        // The sample's values describe the interval that ended at taken_at.
        let interval_start = sample
            .taken_at
            .checked_sub(sample.interval)
            .unwrap_or(sample.taken_at);
        for (ri, rule) in self.compiled.iter_mut().enumerate() {
            let instances = match rule.scope {
                Scope::System => 1,
                Scope::PerCpu => sample.cpus.len().min(rule.since.len()),
                Scope::PerDisk => sample.disks.len().min(rule.since.len()),
            };
            for i in 0..instances {
                let mut values = [f64::NAN; MAX_CONDITIONS];
                let mut holds = true;
                for (k, &(metric, cmp, threshold)) in rule.conds[..rule.n].iter().enumerate() {
                    let v = value(sample, metric, i);
                    values[k] = v;
                    holds &= cmp.holds(v, threshold);
                }
                // A CPU starved by its hypervisor is not hung.
                if holds
                    && rule.scope == Scope::PerCpu
                    && sample.cpu(i, CpuMetric::StealPercent) > self.max_steal_percent
                {
                    holds = false;
                }
                if !holds {
                    rule.since[i] = None;
                    rule.last_alert[i] = None;
                    continue;
                }
                let since = *rule.since[i].get_or_insert(interval_start);
                let held = sample.taken_at.saturating_duration_since(since);
                if held < rule.sustain {
                    continue;
                }
                let repeat = match rule.last_alert[i] {
                    None => false,
                    Some(last) => {
                        if self.repeat.is_zero()
                            || sample.taken_at.saturating_duration_since(last) < self.repeat
                        {
                            continue;
                        }
                        true
                    }
                };
                rule.last_alert[i] = Some(sample.taken_at);
                emit(Alert {
                    rule_index: ri as u16,
                    level: rule.level,
                    instance: match rule.scope {
                        Scope::System => AlertInstance::System,
                        Scope::PerCpu => AlertInstance::Cpu(i as u32),
                        Scope::PerDisk => AlertInstance::Disk(i as u32),
                    },
                    raised_at: sample.taken_at,
                    wall_unix_ms: sample.wall_unix_ms,
                    held_for: held,
                    sample_seq: sample.seq,
                    values,
                    repeat,
                });
            }
        }
    }
}

fn value(sample: &Sample, metric: MetricRef, instance: usize) -> f64 {
    match metric {
        MetricRef::System(m) => sample.system(m),
        MetricRef::Cpu(m) => sample.cpu(instance, m),
        MetricRef::Disk(m) => sample.disk(instance, m),
    }
}

#[cfg(test)]
mod tests;
