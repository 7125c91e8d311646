//! The alert a light-detector rule raises: a small `Copy` value, so handing
//! it to the heavy detector never allocates.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use selfheal_config::{Comparison, Level, Rule};
use selfheal_event::{Culprit, Event, EventKind, Severity, Source};
use selfheal_sampler::{Sample, Scope, SystemMetric};

/// The most conditions a rule may have.
pub const MAX_CONDITIONS: usize = 4;

/// Which instance a rule fired for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertInstance {
    /// The machine as a whole.
    System,
    /// One CPU.
    Cpu(u32),
    /// One block device, by index into the sample's disk table.
    Disk(u32),
}

/// A rule held out of range for its sustain time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Alert {
    /// Index of the rule in the detector's rule list.
    pub rule_index: u16,
    /// Light or heavy.
    pub level: Level,
    /// The CPU, disk or machine.
    pub instance: AlertInstance,
    /// When the alert was raised (monotonic).
    pub raised_at: Instant,
    /// Wall-clock time of the sample that raised it, ms since the epoch.
    pub wall_unix_ms: i64,
    /// How long the condition had held.
    pub held_for: Duration,
    /// The sample sequence number that raised it.
    pub sample_seq: u64,
    /// Each condition's metric value, in rule order (unused slots are NaN).
    pub values: [f64; MAX_CONDITIONS],
    /// True for a repeat of an alert whose condition still holds.
    pub repeat: bool,
}

impl Alert {
    /// The CPU, when the rule is per CPU.
    pub fn cpu(&self) -> Option<u32> {
        match self.instance {
            AlertInstance::Cpu(c) => Some(c),
            _ => None,
        }
    }

    /// Builds the store event for this alert. `snapshot` is the sample to
    /// attach as evidence (normally the one that raised it).
    pub fn to_event(&self, rule: &Rule, snapshot: Option<&Sample>) -> Event {
        let mut parts = Vec::new();
        let mut conditions = Vec::new();
        for (c, v) in rule.when.iter().zip(self.values.iter()) {
            parts.push(format!(
                "{}={:.1} {} {}",
                c.metric.name(),
                v,
                c.cmp.symbol(),
                c.threshold
            ));
            conditions.push(ConditionDetails {
                metric: c.metric.name().into(),
                cmp: c.cmp,
                threshold: c.threshold,
                value: finite(*v),
            });
        }
        let (where_, cpu, disk) = match self.instance {
            AlertInstance::System => (String::new(), None, None),
            AlertInstance::Cpu(c) => (format!(" on cpu {c}"), Some(c), None),
            AlertInstance::Disk(d) => {
                let name = snapshot
                    .and_then(|s| s.disk_names.get(d as usize))
                    .map_or_else(|| format!("disk #{d}"), |n| n.as_str().to_string());
                (format!(" on {name}"), None, Some(name))
            }
        };
        let message = format!(
            "{}{}: {} for {}ms{}",
            rule.name,
            where_,
            parts.join(", "),
            self.held_for.as_millis(),
            if self.repeat { " (still holding)" } else { "" }
        );
        let severity = match self.level {
            Level::Light => Severity::Warning,
            Level::Heavy => Severity::Critical,
        };
        let mut event =
            Event::now(EventKind::Alert, severity, Source::Light, message).with_rule(&rule.name);
        event.time_unix_ms = self.wall_unix_ms;
        if let Some(cpu) = cpu {
            event = event.with_culprit(Culprit {
                cpu: Some(cpu),
                ..Culprit::default()
            });
        }
        let details = AlertDetails {
            level: self.level,
            scope: rule.scope(),
            held_ms: self.held_for.as_millis() as u64,
            sustain_ms: rule.sustain.get().as_millis() as u64,
            sample_seq: self.sample_seq,
            repeat: self.repeat,
            conditions,
            cpu,
            disk,
            snapshot: snapshot.map(snapshot_details),
        };
        event.with_details_of(&details)
    }
}

/// `details` of a light-detector alert event (kind `alert`): what the
/// store, `/api/events`, the heavy detector's trigger and the lab read,
/// and read back by [`AlertDetails::from_event`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertDetails {
    /// `light` or `heavy`.
    pub level: Level,
    /// The rule's scope: `system`, `per_cpu` or `per_disk`.
    #[serde(with = "scope_name")]
    pub scope: Scope,
    /// How long the conditions had held, ms.
    pub held_ms: u64,
    /// How long they must hold, ms.
    pub sustain_ms: u64,
    /// The sample that raised the alert.
    pub sample_seq: u64,
    /// True for a repeat of an alert whose conditions still hold.
    pub repeat: bool,
    /// Each condition with its measured value, in rule order.
    pub conditions: Vec<ConditionDetails>,
    /// The CPU, for per-CPU rules (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// The disk's name, for per-disk rules (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    /// The sample, when one was attached (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotDetails>,
}

/// A stored event that does not read back as a light-detector alert.
#[derive(Debug, thiserror::Error)]
pub enum ReadAlertError {
    /// Only `alert` events of the light detector (or a guest's, forwarded)
    /// carry one.
    #[error("event {id:?} is a `{kind}` event from `{source_name}`; only the light detector's `alert` events carry an alert")]
    NotAnAlert {
        /// The event's id in the store.
        id: Option<i64>,
        /// Its kind.
        kind: EventKind,
        /// Its source.
        source_name: String,
    },
    /// `details` is not the document an alert writes.
    #[error("the details of an alert event are not an alert: {0}")]
    Details(#[source] serde_json::Error),
}

impl AlertDetails {
    /// Reads the alert an `alert` event of the light detector carries
    /// (its own, or a guest's forwarded by the host).
    pub fn from_event(event: &Event) -> Result<AlertDetails, ReadAlertError> {
        let light = match &event.source {
            Source::Light => true,
            Source::Guest(s) => **s == Source::Light,
            _ => false,
        };
        if event.kind != EventKind::Alert || !light {
            return Err(ReadAlertError::NotAnAlert {
                id: event.id,
                kind: event.kind,
                source_name: event.source.to_string(),
            });
        }
        AlertDetails::deserialize(&event.details).map_err(ReadAlertError::Details)
    }
}

/// [`Scope`] by its name (`system`, `per_cpu`, `per_disk`).
mod scope_name {
    use serde::{de, Deserialize, Deserializer, Serializer};

    use selfheal_sampler::Scope;

    pub fn serialize<S: Serializer>(scope: &Scope, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(scope.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Scope, D::Error> {
        let name = String::deserialize(d)?;
        [Scope::System, Scope::PerCpu, Scope::PerDisk]
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| {
                de::Error::custom(format!(
                    "unknown scope `{name}`; expected system, per_cpu or per_disk"
                ))
            })
    }
}

/// One condition of an alert: `metric <cmp> threshold` and its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConditionDetails {
    /// The metric's name.
    pub metric: String,
    /// The comparison (its config key: `above`, `at_most`, …).
    pub cmp: Comparison,
    /// The threshold.
    pub threshold: f64,
    /// The value, rounded to 3 decimals; `null` when not finite.
    pub value: Option<f64>,
}

/// A sample as evidence (`details.snapshot`, `/api/sample`): machine-wide
/// metrics by name, per-CPU and per-disk metrics as arrays of objects.
/// Unavailable metrics are omitted, so the metric objects are maps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotDetails {
    /// The sample's sequence number.
    pub sample_seq: u64,
    /// The sampling interval, ms.
    pub interval_ms: f64,
    /// Machine-wide metrics by name.
    pub system: serde_json::Map<String, serde_json::Value>,
    /// One object per CPU: `cpu` (its number) and its metrics by name.
    pub cpus: Vec<serde_json::Map<String, serde_json::Value>>,
    /// One object per disk: `device` (its name) and its metrics by name.
    pub disks: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// A value rounded to 3 decimals; `None` when not finite.
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then(|| (v * 1000.0).round() / 1000.0)
}

/// [`snapshot_details`] as JSON.
pub fn snapshot_json(s: &Sample) -> serde_json::Value {
    selfheal_event::details_value(&snapshot_details(s))
}

/// A sample as evidence: see [`SnapshotDetails`].
pub fn snapshot_details(s: &Sample) -> SnapshotDetails {
    let mut system = serde_json::Map::new();
    for m in SystemMetric::ALL {
        let v = s.system(*m);
        if v.is_finite() {
            system.insert(m.name().to_string(), finite(v).into());
        }
    }
    let cpus = s
        .cpus
        .iter()
        .enumerate()
        .map(|(i, vals)| {
            let mut o = serde_json::Map::new();
            o.insert("cpu".into(), i.into());
            for m in selfheal_sampler::CpuMetric::ALL {
                let v = vals[m.index()];
                if v.is_finite() {
                    o.insert(m.name().to_string(), finite(v).into());
                }
            }
            o
        })
        .collect();
    let disks = s
        .disks
        .iter()
        .zip(s.disk_names.iter())
        .map(|(vals, name)| {
            let mut o = serde_json::Map::new();
            o.insert("device".into(), name.as_str().into());
            for m in selfheal_sampler::DiskMetric::ALL {
                let v = vals[m.index()];
                if v.is_finite() {
                    o.insert(m.name().to_string(), finite(v).into());
                }
            }
            o
        })
        .collect();
    SnapshotDetails {
        sample_seq: s.seq,
        interval_ms: s.interval.as_secs_f64() * 1000.0,
        system,
        cpus,
        disks,
    }
}
