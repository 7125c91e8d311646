//! Light-detector rules: acceptable ranges per metric with a sustain time.
//!
//! A rule holds when all of its conditions hold for one instance (a CPU, a
//! disk, or the machine) in a sample; held for `sustain`, it raises an alert.
//! The defaults are SHFH's Table 4 thresholds (see `default_rules`).

use std::fmt;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use selfheal_sampler::{MetricRef, Scope};

use crate::duration::HumanDuration;

/// Whether a rule is the light detector's early warning or a hang-level
/// threshold (SHFH's light and heavy ranges).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Out of the normal range: wake the heavy detector to look.
    Light,
    /// In the range SHFH observed only in hangs.
    Heavy,
}

impl Level {
    /// `light` or `heavy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Light => "light",
            Level::Heavy => "heavy",
        }
    }
}

/// How a metric is compared with its threshold. serde writes and reads
/// its config key ([`Comparison::key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    /// value > threshold
    Above,
    /// value ≥ threshold
    AtLeast,
    /// value < threshold
    Below,
    /// value ≤ threshold
    AtMost,
}

impl Comparison {
    /// The config key: `above`, `at_least`, `below`, `at_most`.
    pub fn key(self) -> &'static str {
        match self {
            Comparison::Above => "above",
            Comparison::AtLeast => "at_least",
            Comparison::Below => "below",
            Comparison::AtMost => "at_most",
        }
    }

    /// The operator, for messages.
    pub fn symbol(self) -> &'static str {
        match self {
            Comparison::Above => ">",
            Comparison::AtLeast => ">=",
            Comparison::Below => "<",
            Comparison::AtMost => "<=",
        }
    }

    /// Whether `value` is out of range. `NaN` (metric unavailable) never is.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Above => value > threshold,
            Comparison::AtLeast => value >= threshold,
            Comparison::Below => value < threshold,
            Comparison::AtMost => value <= threshold,
        }
    }

    /// True for `above` and `at_least`: the alarm is on the high side.
    pub fn is_upper(self) -> bool {
        matches!(self, Comparison::Above | Comparison::AtLeast)
    }
}

/// One condition: `metric <cmp> threshold`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Condition {
    /// The metric.
    pub metric: MetricRef,
    /// The comparison.
    pub cmp: Comparison,
    /// The threshold, in the metric's unit.
    pub threshold: f64,
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.metric.name(),
            self.cmp.symbol(),
            self.threshold
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    metric: String,
    above: Option<f64>,
    at_least: Option<f64>,
    below: Option<f64>,
    at_most: Option<f64>,
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawCondition::deserialize(d)?;
        let metric = MetricRef::from_name(&raw.metric).ok_or_else(|| {
            de::Error::custom(format!(
                "unknown metric `{}`; known metrics: {}",
                raw.metric,
                MetricRef::all_names().join(", ")
            ))
        })?;
        let given: Vec<(Comparison, f64)> = [
            (Comparison::Above, raw.above),
            (Comparison::AtLeast, raw.at_least),
            (Comparison::Below, raw.below),
            (Comparison::AtMost, raw.at_most),
        ]
        .into_iter()
        .filter_map(|(c, v)| v.map(|v| (c, v)))
        .collect();
        let [(cmp, threshold)] = given[..] else {
            return Err(de::Error::custom(format!(
                "condition on `{}` needs exactly one of above, at_least, below, at_most (found {})",
                raw.metric,
                given.len()
            )));
        };
        if !threshold.is_finite() {
            return Err(de::Error::custom(format!(
                "threshold for `{}` must be a finite number",
                raw.metric
            )));
        }
        if metric.unit() == "percent" && !(0.0..=100.0).contains(&threshold) {
            return Err(de::Error::custom(format!(
                "threshold {threshold} for `{}` is a percentage and must be within 0..=100",
                raw.metric
            )));
        }
        Ok(Condition {
            metric,
            cmp,
            threshold,
        })
    }
}

impl Serialize for Condition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("metric", self.metric.name())?;
        m.serialize_entry(self.cmp.key(), &self.threshold)?;
        m.end()
    }
}

/// One rule as written in the config (`[[rule]]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    /// Unique name; a rule with a default rule's name replaces it.
    pub name: String,
    /// Light or heavy.
    pub level: Level,
    /// All must hold, for the same instance.
    pub when: Vec<Condition>,
    /// How long they must hold before the alert is raised.
    pub sustain: HumanDuration,
    /// `false` switches the rule (for example a default one) off.
    pub enabled: bool,
}

impl Rule {
    /// The rule's scope: per CPU, per disk, or machine-wide.
    pub fn scope(&self) -> Scope {
        self.when
            .first()
            .map_or(Scope::System, |c| c.metric.scope())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    level: Option<Level>,
    when: Option<Vec<Condition>>,
    sustain: Option<HumanDuration>,
    enabled: Option<bool>,
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawRule::deserialize(d)?;
        if raw.name.is_empty()
            || !raw
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(de::Error::custom(format!(
                "rule name `{}` must be non-empty and use only letters, digits, `_` and `-`",
                raw.name
            )));
        }
        let default = default_rules().into_iter().find(|r| r.name == raw.name);
        let enabled = raw.enabled.unwrap_or(true);
        // A rule named like a default may just switch it off or change one
        // field; anything else must say what it watches.
        let (level, when, sustain) = match (&default, raw.when) {
            (_, Some(when)) => (
                raw.level.or(default.as_ref().map(|r| r.level)).unwrap_or(Level::Light),
                when,
                raw.sustain.or(default.as_ref().map(|r| r.sustain)).unwrap_or_default(),
            ),
            (Some(def), None) => (
                raw.level.unwrap_or(def.level),
                def.when.clone(),
                raw.sustain.unwrap_or(def.sustain),
            ),
            (None, None) => {
                return Err(de::Error::custom(format!(
                    "rule `{}` is not a default rule, so it needs `when = [{{ metric = \"…\", above = … }}]`",
                    raw.name
                )))
            }
        };
        if when.is_empty() {
            return Err(de::Error::custom(format!(
                "rule `{}` has an empty `when`; give at least one condition",
                raw.name
            )));
        }
        let scope = when[0].metric.scope();
        if let Some(other) = when.iter().find(|c| c.metric.scope() != scope) {
            return Err(de::Error::custom(format!(
                "rule `{}` mixes a {} metric (`{}`) with a {} metric (`{}`); all conditions of a rule must share a scope",
                raw.name,
                scope.name(),
                when[0].metric.name(),
                other.metric.scope().name(),
                other.metric.name()
            )));
        }
        Ok(Rule {
            name: raw.name,
            level,
            when,
            sustain,
            enabled,
        })
    }
}

fn cond(metric: &str, cmp: Comparison, threshold: f64) -> Condition {
    Condition {
        metric: MetricRef::from_name(metric).expect("default rule names a known metric"),
        cmp,
        threshold,
    }
}

fn rule(name: &str, level: Level, sustain_ms: u64, when: Vec<Condition>) -> Rule {
    Rule {
        name: name.to_string(),
        level,
        when,
        sustain: HumanDuration::from_millis(sustain_ms),
        enabled: true,
    }
}

/// The built-in rules: SHFH's Table 4 ranges, plus memory and accounting
/// rules expressed relative to the machine (percent of memory, tasks per CPU).
pub fn default_rules() -> Vec<Rule> {
    use Comparison::*;
    use Level::*;
    vec![
        // Light: out of the normal range, look closer.
        rule(
            "kernel_spin",
            Light,
            200,
            vec![
                cond("cpu_system_percent", Above, 50.0),
                cond("cpu_user_percent", Below, 4.0),
            ],
        ),
        rule(
            "iowait_high",
            Light,
            1000,
            vec![cond("cpu_iowait_percent", Above, 50.0)],
        ),
        rule(
            "run_queue_long",
            Light,
            200,
            vec![cond("runnable_tasks_per_cpu", Above, 3.0)],
        ),
        rule(
            "memory_low",
            Light,
            0,
            vec![cond("mem_available_percent", Below, 10.0)],
        ),
        // Falling fast while there is still room to act: a kernel leak
        // took the lab guest's last fifth of memory in 3 s, and
        // `memory_low` alone saw it under a second before the kernel's
        // OOM panic. The same bounds as the heavy detector's trend test
        // for memory no process accounts for (`mem_unaccounted_percent`,
        // `mem_exhaustion_horizon`): an alert repeats only after `repeat`,
        // so one that fired earlier would be dismissed and not come back.
        rule(
            "memory_falling",
            Light,
            200,
            vec![
                cond("mem_exhaustion_seconds", Below, 3.0),
                cond("mem_available_percent", Below, 20.0),
            ],
        ),
        rule(
            "memory_pressure",
            Light,
            0,
            vec![cond("psi_memory_some_avg10", Above, 10.0)],
        ),
        rule(
            "swap_storm",
            Light,
            1000,
            vec![cond("swap_out_pages_per_second", Above, 2500.0)],
        ),
        rule(
            "cpu_accounting_stopped",
            Light,
            300,
            vec![cond("cpu_accounted_percent", Below, 25.0)],
        ),
        // Heavy: what SHFH saw only in hangs.
        rule(
            "kernel_spin_hang",
            Heavy,
            1000,
            vec![
                cond("cpu_system_percent", AtLeast, 95.0),
                cond("cpu_user_percent", AtMost, 1.0),
            ],
        ),
        rule(
            "iowait_hang",
            Heavy,
            1000,
            vec![cond("cpu_iowait_percent", AtLeast, 90.0)],
        ),
        rule(
            "run_queue_hang",
            Heavy,
            1000,
            vec![cond("runnable_tasks_per_cpu", AtLeast, 10.0)],
        ),
        rule(
            "memory_exhausted",
            Heavy,
            500,
            vec![cond("mem_available_percent", Below, 3.0)],
        ),
        rule(
            "memory_thrashing",
            Heavy,
            1000,
            vec![cond("psi_memory_full_avg10", AtLeast, 20.0)],
        ),
    ]
}

/// Merges `overrides` into `base` by name: same name replaces, new names are
/// appended, order otherwise kept.
pub fn merge_rules(base: &mut Vec<Rule>, overrides: &[Rule]) {
    for r in overrides {
        match base.iter_mut().find(|b| b.name == r.name) {
            Some(slot) => *slot = r.clone(),
            None => base.push(r.clone()),
        }
    }
}
